"""The internal link check of the built site: every local ``href`` / ``src`` of every page points at a file
that exists (and, with a ``#fragment``, at an id in that page), and nothing a page loads (scripts, styles,
images, media, frames) comes from another host. Links a reader follows to other sites (``<a href="https://…">``)
are allowed: they are not fetched when the page is viewed."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: tags whose URL attribute the browser fetches when the page is shown
FETCHED = {
    ("script", "src"),
    ("img", "src"),
    ("source", "src"),
    ("video", "src"),
    ("video", "poster"),
    ("audio", "src"),
    ("iframe", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("link", "href"),
}
LINKED = {("a", "href"), ("area", "href")}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key):
                self.ids.add(values[key])
        for attr, value in attrs:
            if value is not None and ((tag, attr) in FETCHED or (tag, attr) in LINKED):
                if tag == "link" and values.get("rel") in ("canonical", "alternate"):
                    continue
                self.urls.append((tag, attr, value))


def _parse(path: Path, cache: dict[Path, _Page]) -> _Page:
    if path not in cache:
        page = _Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = page
    return cache[path]


def check_site(site: Path) -> list[str]:
    """Every problem found in the site folder ``site`` (empty when all links hold)."""
    site = site.resolve()
    problems: list[str] = []
    cache: dict[Path, _Page] = {}
    for html in sorted(site.rglob("*.html")):
        if html.relative_to(site).parts[0] == "_static":  # the theme's template fragments, not pages
            continue
        page = _parse(html, cache)
        rel = html.relative_to(site)
        for tag, attr, url in page.urls:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "mailto", "javascript", "about"):
                continue
            if parts.scheme or parts.netloc:
                if (tag, attr) in FETCHED:
                    problems.append(f"{rel}: <{tag} {attr}> loads {url} from another host")
                continue
            if not parts.path:  # "#fragment" within the page
                target = html
            else:
                target = (html.parent / unquote(parts.path)).resolve()
                if target.is_dir():
                    target = target / "index.html"
            if not target.is_relative_to(site):
                problems.append(f"{rel}: <{tag} {attr}={url!r}> points outside the site")
                continue
            if not target.exists():
                problems.append(f"{rel}: <{tag} {attr}={url!r}>: {target.relative_to(site)} does not exist")
                continue
            fragment = unquote(parts.fragment)
            if fragment and target.suffix == ".html" and fragment not in _parse(target, cache).ids:
                problems.append(f"{rel}: <{tag} {attr}={url!r}>: no id {fragment!r} in {target.relative_to(site)}")
    return problems
