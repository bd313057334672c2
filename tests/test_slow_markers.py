"""The slow-test list in tests/conftest.py names tests that exist (a renamed test would silently run in
``make test-fast`` otherwise), and ``-m "not slow"`` keeps the fast unit tests."""

import re
from pathlib import Path

from conftest import SLOW_FILES, SLOW_TESTS

ROOT = Path(__file__).resolve().parents[1]


def test_every_listed_slow_test_exists():
    for path in SLOW_FILES:
        assert (ROOT / path).is_file(), path
    for path, names in SLOW_TESTS.items():
        source = (ROOT / path).read_text(encoding="utf-8")
        for name in names:
            base = name.split("[")[0]
            assert re.search(rf"^def {re.escape(base)}\(", source, re.M), f"{path}: no test named {base}"
