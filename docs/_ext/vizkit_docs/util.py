"""Small helpers of the docs generators."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs"


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it (Sphinx then keeps the page's cached build);
    True when written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def md_cell(text: str) -> str:
    """``text`` made safe for a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
