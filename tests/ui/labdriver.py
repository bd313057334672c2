"""Drive the scenario notebooks in JupyterLab as a person does, in a real browser.

- :func:`jupyterlab` starts ``jupyter lab`` from this interpreter's environment on 127.0.0.1 with
  a free port and a random token, serving a temp copy of the ``.ipynb`` files of ``notebooks/``
  (without their jupytext ``.py`` pairs, so the notebook opened is the executed one as committed;
  windowing off so every cell is in the page, news and update checks off, run folders under a
  temp ``$VIZKIT_RUNS``); it is stopped in a ``finally``.
- :func:`chromium` launches Debian's ``chromium`` headless through playwright (``executable_path``:
  playwright's own browser download cannot work offline).
- :class:`NotebookSession` opens one notebook, runs all cells, checks for errors, and moves
  the controls of its explorer (as the scenario registry declares them, from the class's ``CONTROLS``),
  timing each move from the change to the new image in the page.

Used by ``tests/ui/test_notebooks_in_browser.py`` and ``benchmarks/bench_ui_latency.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vizkit.scenarios.registry import get_scenario

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
CHROMIUM = os.environ.get("VIZKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
LOCAL_HOSTS = ("127.0.0.1", "localhost")
ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on screen
WIDGET_PROBLEMS = ("Error displaying widget", "Loading widget...", "Loading widget…")
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def notebook_names() -> list[str]:
    """Every scenario notebook (``NN_<stem>.ipynb``) in ``notebooks/``."""
    return sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def explorer_controls(name: str) -> list[dict[str, str]]:
    """The controls (``{"label", "kind"}``) of the notebook's explorer, from the scenario registry
    (:mod:`vizkit.scenarios.registry`: the explorer class's ``CONTROLS``); an unregistered notebook
    fails with the list of the registered ones."""
    return get_scenario(name).controls


def inject_ui_parameters(path: Path) -> dict[str, Any]:
    """Add the browser-test parameters the scenario registry declares for the notebook
    (``ScenarioSpec.ui_parameters``) as an ``injected-parameters`` cell right after its
    ``parameters`` cell (as papermill does); the notebook's own validation then checks them.
    Returns what was injected."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    params = dict(get_scenario(path).ui_parameters)
    if params:
        at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
        source = "# Parameters of the browser test\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
        nb["cells"].insert(
            at + 1,
            {
                "cell_type": "code",
                "id": "injected-ui-parameters",
                "execution_count": None,
                "outputs": [],
                "source": source,
                "metadata": {"tags": ["injected-parameters"]},
            },
        )
        path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return params


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    root: Path
    runs: Path
    log: Path


@contextmanager
def jupyterlab(workdir: Path, timeout: float = 90.0) -> Iterator[Server]:
    """A JupyterLab server on 127.0.0.1 serving a copy of ``notebooks/`` in ``workdir``."""
    root, settings, runs = workdir / "notebooks", workdir / "settings", workdir / "runs"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns("*.py", "jupytext.toml"))
    for path in root.glob("[0-9][0-9]_*.ipynb"):
        inject_ui_parameters(path)
    for rel, value in SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend draws figures
    env.update(
        {"VIZKIT_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "JUPYTER_PLATFORM_DIRS": "1"}
    )
    jupyter = Path(sys.executable).with_name("jupyter")
    log = workdir / "jupyterlab.log"
    cmd = [
        str(jupyter),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.25).close()
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jupyter lab did not listen within {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                    ) from err
                time.sleep(0.25)
        yield Server(f"http://127.0.0.1:{port}", token, root, runs, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, through playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`); `make ui-test` does it"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


# the explorer's images, fetched as bytes (data: and blob: URLs alike) and hashed in the page
_DIGEST_JS = """async (root) => {
  const imgs = [...root.querySelectorAll('img')];
  if (!imgs.length || imgs.some(i => !i.src)) return '';
  const parts = await Promise.all(imgs.map(async i => new Uint8Array(await (await fetch(i.src)).arrayBuffer())));
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length + 1, 0));
  let k = 0;
  for (const p of parts) { all.set(p, k); k += p.length + 1; }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', all));
  return [...digest].map(b => b.toString(16).padStart(2, '0')).join('');
}"""


@dataclass
class Move:
    control: str
    kind: str
    value: str
    seconds: float


@dataclass
class NotebookSession:
    """One notebook open in a browser page: requests, console and timings recorded."""

    browser: Any
    server: Server
    name: str
    shots: Path
    page: Any = None
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    run_seconds: float = 0.0

    def open(self) -> "NotebookSession":
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.url} ({r.failure})"))
        self.page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        # ?reset: a fresh workspace, so only this notebook is open (no tab restored from an earlier one)
        self.page.goto(f"{self.server.url}/lab/tree/{self.name}?reset&token={self.server.token}")
        self.page.wait_for_selector(f"{ACTIVE} .jp-Notebook .jp-Cell", timeout=90_000)
        # the kernel is started and connected: the status bar says "<kernel> | Idle" (before that it
        # says "No Kernel | Initializing", and a Run All then clears the prompts without running anything)
        self.page.wait_for_function(
            "() => { const bar = document.querySelector('#jp-main-statusbar'); const t = bar ? bar.innerText : '';"
            " return /\\| Idle/.test(t) && !/No Kernel/.test(t); }",
            polling=200,
            timeout=180_000,
        )
        return self

    def close(self) -> None:
        """Shut the notebook's kernel down (its models leave memory) and close the page."""
        if self.page is None:
            return
        try:
            auth = {"Authorization": f"token {self.server.token}"}
            for sess in self.page.request.get(f"{self.server.url}/api/sessions", headers=auth).json():
                if sess.get("path", "").endswith(self.name):
                    self.page.request.delete(f"{self.server.url}/api/sessions/{sess['id']}", headers=auth)
        finally:
            self.page.close()

    def screenshot(self, label: str) -> Path:
        path = self.shots / f"{Path(self.name).stem}_{label}.png"
        self.page.screenshot(path=str(path))
        return path

    # ------------------------------------------------------------------ running
    def run_all(self, timeout: float = 600.0) -> None:
        """Run > Run All Cells, then wait until every code cell has run and the kernel is idle."""
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.locator("li[data-command='runmenu:run-all']").click()
        t0 = time.monotonic()
        while True:
            prompts = self.page.eval_on_selector_all(
                f"{ACTIVE} .jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent.trim())"
            )
            done = prompts and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)
            idle = self.page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
            if done and idle:
                break
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{self.name}: Run All did not finish in {timeout:.0f} s (prompts {prompts})")
            time.sleep(0.5)
        self.run_seconds = time.monotonic() - t0

    def problems(self) -> list[str]:
        """Cell errors and widgets that failed to render, as shown in the page."""
        errors = self.page.eval_on_selector_all(
            f"{ACTIVE} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
            "els => els.map(e => e.textContent)",
        )
        found = [f"cell error: {e[:800]}" for e in errors if "Traceback" in e or "Error" in e.split("\n", 2)[0]]
        text = self.page.inner_text(f"{ACTIVE} .jp-Notebook")
        found += [f"widget problem: {w!r} shown" for w in WIDGET_PROBLEMS if w in text]
        return found

    def foreign_requests(self) -> list[str]:
        """Requests (made or failed) to any host other than 127.0.0.1 / localhost."""
        bad = []
        for url in self.requests + self.failed_requests:
            parsed = urlparse(url.split(" ")[0])
            if parsed.scheme in ("data", "blob", "about", "chrome-extension"):
                continue
            if parsed.hostname not in LOCAL_HOSTS:
                bad.append(url)
        return bad

    # ------------------------------------------------------------------ the explorer
    def explorer(self, controls: list[dict[str, str]]) -> Any:
        """The explorer widget: the top-level widget box holding the first declared control."""
        first = controls[0]["label"]
        root = (
            self.page.locator(f"{ACTIVE} .jp-OutputArea-output .widget-vbox")
            .filter(has=self.page.locator(f"label.widget-label:text-is('{first}')"))
            .last
        )
        root.wait_for(state="visible", timeout=30_000)
        root.scroll_into_view_if_needed()
        root.locator("img").first.wait_for(timeout=30_000)
        return root

    def image_digest(self, root: Any) -> str:
        """SHA-256 of the bytes of every image the explorer shows, as the page has them."""
        return root.evaluate(_DIGEST_JS)

    def move(self, root: Any, control: dict[str, str], timeout: float = 30.0) -> Move:
        """Change one control in the page; wait until the bytes of the explorer's images change; time it."""
        label, kind = control["label"], control["kind"]
        old = self.image_digest(root)
        box = root.locator(
            f".jupyter-widgets:has(> label.widget-label:text-is('{label}')), "
            f".widget-toggle-buttons:has(> label.widget-label:text-is('{label}'))"
        ).first
        if kind == "slider":
            handle = box.locator(".noUi-handle").first
            now, top = float(handle.get_attribute("aria-valuenow")), float(handle.get_attribute("aria-valuemax"))
            key = "ArrowLeft" if now >= top else "ArrowRight"
            handle.focus()
            t0 = time.perf_counter()
            handle.press(key)
            value = key
        elif kind == "dropdown":
            select = box.locator("select").first
            options = select.locator("option").all_inner_texts()
            current = select.evaluate("s => s.selectedIndex")
            value = options[(current + 1) % len(options)]
            t0 = time.perf_counter()
            select.select_option(index=(current + 1) % len(options))
        elif kind == "toggle":
            buttons = box.locator("button")
            texts = buttons.all_inner_texts()
            active = [i for i in range(len(texts)) if "mod-active" in (buttons.nth(i).get_attribute("class") or "")]
            nxt = ((active[0] if active else -1) + 1) % len(texts)
            value = texts[nxt]
            t0 = time.perf_counter()
            buttons.nth(nxt).click()
        else:
            raise AssertionError(f"unknown control kind {kind!r} for {label!r}")
        try:
            self.page.wait_for_function(
                f"async ([root, old]) => {{ const d = await ({_DIGEST_JS})(root); return d && d !== old; }}",
                arg=[root.element_handle(), old],
                polling=5,
                timeout=timeout * 1000,
            )
        except Exception as err:  # playwright's TimeoutError
            raise AssertionError(
                f"{self.name}: moving {kind} {label!r} to {value!r} did not change the figure within {timeout:.0f} s"
            ) from err
        move = Move(label, kind, value, time.perf_counter() - t0)
        self.moves.append(move)
        return move

    def latency_summary(self) -> dict[str, Any]:
        import statistics

        s = sorted(m.seconds * 1e3 for m in self.moves)
        return {
            "notebook": self.name,
            "moves": len(s),
            "median_ms": statistics.median(s) if s else None,
            "worst_ms": max(s) if s else None,
            "run_all_s": round(self.run_seconds, 1),
            "per_move": [{"control": m.control, "value": m.value, "ms": round(m.seconds * 1e3, 1)} for m in self.moves],
        }


def explore(browser: Any, server: Server, name: str, shots: Path, min_moves: int = 10) -> NotebookSession:
    """Open ``name``, Run All, check it, move every declared control (at least ``min_moves``
    moves in all, cycling through the controls), with screenshots before and after."""
    session = NotebookSession(browser, server, name, shots).open()
    session.run_all()
    session.screenshot("after_run_all")
    controls = explorer_controls(name)
    root = session.explorer(controls)
    root.screenshot(path=str(shots / f"{Path(name).stem}_explorer_before.png"))
    k = 0
    while k < max(min_moves, len(controls)):
        session.move(root, controls[k % len(controls)])
        k += 1
    root.screenshot(path=str(shots / f"{Path(name).stem}_explorer_after.png"))
    session.screenshot("after_moves")
    return session
