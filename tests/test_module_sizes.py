"""Size limits of the orchestration layers (issue 27's contract): a scenario module only orchestrates
(<= 450 lines), a CLI module only parses and calls its scenario (<= 250 lines). Counted on the
ruff-formatted source that `make lint` checks."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"vizkit/scenarios": 450, "vizkit/cli": 250}


@pytest.mark.parametrize("folder", sorted(LIMITS))
def test_orchestration_modules_stay_small(folder):
    limit = LIMITS[folder]
    sizes = {p.name: len(p.read_text().splitlines()) for p in sorted((ROOT / folder).glob("*.py"))}
    assert sizes, f"no modules found in {folder}"
    over = {name: n for name, n in sizes.items() if n > limit}
    assert over == {}, f"{folder}: modules over {limit} lines (move general machinery down a layer): {over}"
