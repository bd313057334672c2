"""Build the documentation site: ``python docs/build.py [SITE]`` (``make docs``; default ``docs/_build/html``).

A fresh Sphinx build (no cached environment) with warnings as errors (``-W --keep-going``: every warning is
listed, then the build fails), followed by the internal link check the ``vizkit_docs`` extension runs when
the build finishes. The site is built into a temporary folder beside ``SITE`` and moved into place only when
all of that passed, so ``SITE`` always holds the last good build and never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SITE = DOCS / "_build" / "html"


def build(site: Path = SITE, quiet: bool = True) -> float:
    """Build the site into ``site``; returns the seconds it took. Raises ``SystemExit`` with Sphinx's exit
    code when the build or the link check fails."""
    from sphinx.cmd.build import build_main

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    site = Path(site).resolve()
    site.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".docs-", dir=site.parent) as tmp:
        out, doctrees = Path(tmp) / "html", Path(tmp) / "doctrees"
        args = ["-b", "html", "-W", "--keep-going", "-E", "-d", str(doctrees), str(DOCS), str(out)]
        code = build_main((["-q"] if quiet else []) + args)
        if code:
            raise SystemExit(code)
        if site.exists():
            shutil.rmtree(site)
        shutil.move(str(out), str(site))
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    site = Path(argv[0]) if argv else SITE
    seconds = build(site)
    print(f"docs: built {site} in {seconds:.0f} s (open {site / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
