"""Every scenario notebook as a person uses it: JupyterLab in Debian's Chromium, Run All with the
widgets on, then every explorer control moved in the page and the figure checked to change.

Real components, started here: a JupyterLab server (127.0.0.1, free port, random token) and
headless Chromium through playwright. Nothing is mocked. The latencies (change -> new image in
the page) are printed and written to the run folder; they are measured, not asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labdriver import chromium, explore, explorer_controls, jupyterlab, notebook_names

from vizkit.runs import run_folder

NAMES = notebook_names()


@pytest.fixture(scope="module")
def out() -> Path:
    return run_folder(None, "ui-test")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with jupyterlab(tmp_path_factory.mktemp("jupyterlab")) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_every_notebook_declares_its_explorer():
    assert NAMES, "no scenario notebooks found"
    for name in NAMES:
        controls = explorer_controls(name)
        assert controls and all(c["kind"] in ("slider", "dropdown", "toggle") for c in controls), name


@pytest.mark.parametrize("name", NAMES)
def test_notebook_in_the_browser(name, server, browser, out):
    session = None
    try:
        session = explore(browser, server, name, out)
        assert session.problems() == [], session.problems()
        assert session.foreign_requests() == [], f"requests to hosts other than 127.0.0.1: {session.foreign_requests()}"
        assert {m.control for m in session.moves} == {c["label"] for c in explorer_controls(name)}
        summary = session.latency_summary()
        (out / f"{Path(name).stem}_latency.json").write_text(json.dumps(summary, indent=2))
        print(
            f"\n{name}: Run All {summary['run_all_s']} s; {summary['moves']} control moves, change -> new image "
            f"median {summary['median_ms']:.0f} ms, worst {summary['worst_ms']:.0f} ms; screenshots in {out}"
        )
    except BaseException:
        if session is not None and session.page is not None:
            shot = session.screenshot("failure")
            print(f"\nscreenshot: {shot}\nbrowser console:\n" + "\n".join(session.console[-60:]))
            print("problems:", session.problems())
        print("jupyterlab log (tail):\n" + server.log.read_text()[-3000:])
        raise
    finally:
        if session is not None:
            session.close()
