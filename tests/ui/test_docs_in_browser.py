"""The documentation site as a reader opens it: the built site (``make docs``: ``docs/_build/html``) served by a
local HTTP server on 127.0.0.1 and opened in the same headless Chromium as the notebooks' browser test
(Debian's ``chromium`` driven by playwright, no browser download).

- every page loads with no console error, no uncaught script error, no failed request and no request to a
  host other than 127.0.0.1; where a page has math, the bundled MathJax typesets it without an error;
- the search page finds "gradcam";
- the video on the notebook-05 tutorial page plays: its ``readyState`` reaches 4 (``HAVE_ENOUGH_DATA``);
- screenshots of the home page and of a tutorial page are saved in the run folder
  (``runs/<timestamp>-docs-ui-test/``).

``make ui-test`` builds the site first when a source changed (``make docs``); run alone, this test builds it
when ``docs/_build/html`` is missing. Real components: nothing is mocked.
"""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from labdriver import CHROMIUM_ARGS, LOCAL_HOSTS, chromium

from vizkit.runs import run_folder

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "docs" / "_build" / "html"
TUTORIAL_SHOT = "tutorials/02_vit_mnist_attention.html"
VIDEO_PAGE = "tutorials/05_vlm_attention_video.html"
assert CHROMIUM_ARGS  # the same launch flags as the notebooks' test (labdriver.chromium)


def pages(site: Path) -> list[str]:
    """Every page of the site, relative to it (the theme's template fragments under ``_static`` left out)."""
    return sorted(
        p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.relative_to(site).parts[0] != "_static"
    )


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown the test's output
        pass


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").exists():
        sys.path.insert(0, str(ROOT / "docs"))
        from build import build

        build(SITE)
    return SITE


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def out() -> Path:
    return run_folder(None, "docs-ui-test")


class Visit:
    """One page open in the browser, with its console, script errors and requests recorded."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))
        self.page.goto(url, wait_until="load")
        self.page.wait_for_load_state("networkidle")

    def foreign(self) -> list[str]:
        bad = []
        for url in self.requests:
            parsed = urlparse(url)
            if parsed.scheme in ("data", "blob", "about"):
                continue
            if parsed.hostname not in LOCAL_HOSTS:
                bad.append(url)
        return bad

    def typeset_math(self) -> dict[str, int]:
        """Wait for MathJax (when the page has math) and count what it typeset and any errors it shows."""
        if self.page.locator(".math").count() == 0:
            return {"math": 0, "typeset": 0, "errors": 0}
        ready = "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
        self.page.wait_for_function(ready, timeout=30_000)
        self.page.evaluate("() => MathJax.startup.promise")
        return {
            "math": self.page.locator(".math").count(),
            "typeset": self.page.locator("mjx-container").count(),
            "errors": self.page.locator("mjx-merror, [data-mjx-error]").count(),
        }

    def close(self) -> None:
        self.page.close()


def test_the_site_has_every_section(site):
    found = set(pages(site))
    for page in ("index.html", "getting-started.html", "search.html", "changelog.html", VIDEO_PAGE, TUTORIAL_SHOT):
        assert page in found, page
    for folder in ("tutorials", "methods", "howto", "reference", "reference/api", "development"):
        assert any(p.startswith(folder + "/") for p in found), folder


def test_every_page_loads_cleanly_and_offline(site, server, browser):
    problems: list[str] = []
    typeset = 0
    for page in pages(site):
        visit = Visit(browser, f"{server}/{page}")
        try:
            math = visit.typeset_math()
            typeset += math["typeset"]
            if math["math"] and not math["typeset"]:
                problems.append(f"{page}: {math['math']} math elements, none typeset by MathJax")
            if math["errors"]:
                problems.append(f"{page}: {math['errors']} MathJax error(s)")
            problems += [f"{page}: console {line}" for line in visit.console]
            problems += [f"{page}: request to another host {url}" for url in visit.foreign()]
            problems += [f"{page}: failed request {line}" for line in visit.failed]
        finally:
            visit.close()
    print(f"\n{len(pages(site))} pages loaded, {typeset} formulas typeset by the bundled MathJax")
    assert typeset > 0, "no page has typeset math: the methods pages should"
    assert problems == [], "\n".join(problems)


def test_search_finds_gradcam(server, browser):
    visit = Visit(browser, f"{server}/search.html?q=gradcam")
    try:
        visit.page.wait_for_function(
            "() => document.querySelectorAll('#search-results ul.search li').length > 0", timeout=30_000
        )
        hits = visit.page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(e => e.href)")
        print(f"\nsearch 'gradcam': {len(hits)} results, first {hits[:3]}")
        assert any("methods/cam.html" in h for h in hits), hits
        assert visit.console == [] and visit.foreign() == []
    finally:
        visit.close()


def test_the_notebook_05_video_plays(server, browser):
    visit = Visit(browser, f"{server}/{VIDEO_PAGE}")
    try:
        video = visit.page.locator("video").first
        video.scroll_into_view_if_needed()
        visit.page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
        visit.page.wait_for_function("() => document.querySelector('video').readyState === 4", timeout=30_000)
        state = visit.page.evaluate(
            "() => { const v = document.querySelector('video');"
            " return {readyState: v.readyState, duration: v.duration, error: v.error && v.error.code,"
            " width: v.videoWidth, height: v.videoHeight}; }"
        )
        print(f"\nnotebook 05 video: {state}")
        assert state["readyState"] == 4 and state["error"] is None
        assert state["duration"] > 0 and state["width"] > 0 and state["height"] > 0
        assert visit.console == [] and visit.foreign() == []
    finally:
        visit.close()


def test_screenshots_of_the_home_page_and_a_tutorial(server, browser, out):
    home = Visit(browser, f"{server}/index.html")
    try:
        home.page.screenshot(path=str(out / "docs_home.png"), full_page=True)
    finally:
        home.close()
    tutorial = Visit(browser, f"{server}/{TUTORIAL_SHOT}")
    try:
        tutorial.page.screenshot(path=str(out / "docs_tutorial_02.png"))
        figure = tutorial.page.locator(".cell_output img").first  # the notebook's first figure, as committed
        figure.scroll_into_view_if_needed()
        figure.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
        assert figure.evaluate("img => img.naturalWidth") > 0
        tutorial.page.screenshot(path=str(out / "docs_tutorial_02_figure.png"))
    finally:
        tutorial.close()
    shots = [out / n for n in ("docs_home.png", "docs_tutorial_02.png", "docs_tutorial_02_figure.png")]
    print(f"\nscreenshots: {', '.join(str(s) for s in shots)}")
    assert all(s.stat().st_size > 10_000 for s in shots)
