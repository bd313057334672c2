"""``vizkit run``: parameters validated by the notebook's own check before anything runs, grid
sweeps executed by real papermill kernels on a real Dask LocalCluster (process workers) and on a
``dask scheduler`` + ``dask worker`` started as subprocesses, index.csv / index.md, failures and
dead workers recorded, resume / --force, Ctrl-C. The executed notebook is a small one written
here (a kernel start and a few statements), so the sweep tests stay fast; notebook 02 is used
for the validation messages (it is executed by benchmarks/bench_dask.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from daskcluster import ROOT, subprocess_env

from vizkit.cli import main
from vizkit.distributed.params import expand_grid, read_notebook, run_name
from vizkit.errors import InputError
from vizkit.scenarios import vit_mnist_attention
from vizkit.scenarios.registry import notebook_validator

NB02 = ROOT / "notebooks" / "02_vit_mnist_attention.ipynb"


def toy_notebook(path: Path) -> Path:
    """Parameters x, mode (a | b, checked in the notebook), fail, die (kills its worker), sleep."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("import os, signal, time\n_before = set(globals())"),
        nbformat.v4.new_code_cell(
            'x: int = 1  # a number\nmode: str = "a"  # a | b\nfail: bool = False  # raise\n'
            "die: bool = False  # kill the worker process\nsleep: float = 0.0  # seconds\n"
            'output_dir: str = ""  # run folder',
            metadata={"tags": ["parameters"]},
        ),
        nbformat.v4.new_code_cell(
            "time.sleep(sleep)\nif die:\n    os.kill(os.getppid(), signal.SIGKILL)\n    time.sleep(60)\n"
            'if fail:\n    raise ValueError(f"failing on purpose x={x}")\nos.makedirs(output_dir, exist_ok=True)\n'
            'open(os.path.join(output_dir, "report.md"), "w").write(f"x={x} mode={mode} pid={os.getpid()}")'
        ),
    ]
    nbformat.write(nb, path)
    return path


def index_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "index.csv", newline="") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


@pytest.fixture
def worker_env(monkeypatch):
    """LocalCluster workers inherit the environment: their kernels import this checkout's vizkit."""
    for k, v in subprocess_env().items():
        monkeypatch.setenv(k, v)


# ------------------------------------------------------------------ validation (nothing runs)
def test_parameters_cell_and_the_notebooks_own_check_are_read():
    spec = read_notebook(NB02, notebook_validator)  # the scenario registry's, by the notebook's stem
    assert spec.validator is vit_mnist_attention.check_notebook_parameters
    assert spec.defaults["num_samples"] == 8 and spec.types["num_samples"] == (int,)
    assert spec.parse_value("num_samples", "4") == 4 and spec.parse_value("head_fusion", "max") == "max"
    assert spec.parse_value("indices", "[1, 2]") == [1, 2] and spec.parse_value("model", "123") == "123"
    assert expand_grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert expand_grid([{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert run_name({"num_samples": 4, "head_fusion": "max"}) == "num_samples=4__head_fusion=max"
    assert len(run_name({"images": "x" * 300})) == 96


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-p", "num_sample", "4"], "unknown parameter 'num_sample' (did you mean num_samples?)"),
        (["-p", "head_fusion", "avg"], "head_fusion='avg': choose one of 'mean', 'max', 'min'"),
        (["-p", "num_samples", "four"], "num_samples='four': expected int, got str"),
        (["-p", "num_samples", "0"], "num_samples=0: must be positive"),
        (["-p", "output_dir", "x"], "output_dir is set by vizkit run"),
        (
            ["--grid", "GRID:{num_samples: [2], head_fusoin: [mean, max]}"],
            "--grid: invalid notebook parameters:\n  - unknown parameter 'head_fusoin' (did you mean head_fusion",
        ),
        (["--grid", "GRID:{num_samples: [2, -1]}"], "run num_samples=-1: invalid notebook parameters"),
        (["--grid", "GRID:{num_samples: 2}"], "must be a mapping of parameter -> list of values: 'num_samples' is 2"),
        (
            ["--grid", "GRID:[1, 2]"],
            "must be a mapping of parameter -> list of values (or a list of mappings), got list",
        ),
        (["--grid", "missing.yaml"], "grid file 'missing.yaml' does not exist"),
        (["-f", "PARAMS:[1]"], "must be a mapping of name -> value"),
    ],
)
def test_bad_input_is_rejected_before_any_run(tmp_path, capsys, argv, message):
    argv = list(argv)
    for i, a in enumerate(argv):
        if a.startswith(("GRID:", "PARAMS:")):
            path = tmp_path / "file.yaml"
            path.write_text(a.split(":", 1)[1])
            argv[i] = str(path)
    out = tmp_path / "out"
    code = main(["run", str(NB02), *argv, "--output-dir", str(out), "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()  # nothing written, no cluster started


def test_missing_notebook_and_unreachable_scheduler(tmp_path, capsys):
    assert main(["run", str(ROOT / "notebooks" / "02_vit_mnist_attentoin.ipynb")]) == 2
    assert "does not exist (did you mean" in capsys.readouterr().err
    # a free port nobody listens on: one message within 10 s (the CLI in its own process, imports included)
    from daskcluster import free_port

    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vizkit.cli",
            "run",
            str(toy_notebook(tmp_path / "toy.ipynb")),
            "--scheduler",
            f"tcp://127.0.0.1:{free_port()}",
            "--output-dir",
            str(tmp_path / "o"),
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    # the refusal waits 5 s for the scheduler; the rest is the subprocess importing vizkit and Dask, which
    # takes several seconds on a loaded 2-core machine. Dask's own default would wait 30 s: stay below it.
    assert proc.returncode == 2 and elapsed < 20, (elapsed, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1].startswith("vizkit run: error: cannot reach the Dask scheduler at")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # a refused sweep writes nothing (no index listing runs as pending)


# ------------------------------------------------------------------ sweeps on a real LocalCluster
def test_sweep_failures_dead_worker_resume_and_force(tmp_path, capsys, worker_env):
    nb = toy_notebook(tmp_path / "toy.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text("- {x: 1}\n- {x: 2}\n- {x: 3, fail: true}\n- {x: 4, die: true}\n- {x: 5, mode: b}\n")
    out = tmp_path / "sweep"
    argv = ["run", str(nb), "--grid", str(grid), "--output-dir", str(out), "--workers", "2", "--retries", "1"]
    assert main(argv) == 1  # a run failed: non-zero, the others done
    rows = index_rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "x=1": "done",
        "x=2": "done",
        "x=3__fail=True": "failed",
        "x=4__die=True": "failed",
        "x=5__mode=b": "done",
    }
    assert rows["x=3__fail=True"]["error"] == "cell 4: ValueError: failing on purpose x=3"
    assert "died 2 time(s)" in rows["x=4__die=True"]["error"] and rows["x=4__die=True"]["attempts"] == "2"
    assert rows["x=5__mode=b"]["report"] == "x=5__mode=b/outputs/report.md"
    assert (out / "x=5__mode=b" / "outputs" / "report.md").read_text().startswith("x=5 mode=b")
    executed = nbformat.read(out / "x=3__fail=True" / "toy.ipynb", as_version=4)  # the error cell is kept
    assert any(o.get("ename") == "ValueError" for c in executed.cells for o in c.get("outputs", []))
    assert not (out / "x=3__fail=True" / ".complete.json").exists()
    assert (out / "x=1" / ".complete.json").exists()
    md = (out / "index.md").read_text()
    assert "3 done, 2 failed (of 5)" in md and "[report](x=1/outputs/report.md)" in md
    err = capsys.readouterr().err
    assert "x=3__fail=True failed: cell 4: ValueError" in err and "dashboard http://127.0.0.1:" in err

    # rerun: complete runs are skipped, failed ones rerun (fixed grid: nothing fails now)
    grid.write_text("- {x: 1}\n- {x: 2}\n- {x: 3}\n- {x: 5, mode: b}\n")
    first = (out / "x=1" / "outputs" / "report.md").read_text()
    assert main(argv) == 0
    rows = index_rows(out)
    assert [rows[k]["status"] for k in ("x=1", "x=2", "x=3", "x=5__mode=b")] == [
        "skipped",
        "skipped",
        "done",
        "skipped",
    ]
    assert (out / "x=1" / "outputs" / "report.md").read_text() == first
    # --force reruns everything (a new kernel: another pid in the report)
    assert main([*argv, "--force"]) == 0
    assert {r["status"] for r in index_rows(out).values()} == {"done"}
    assert (out / "x=1" / "outputs" / "report.md").read_text() != first


def test_ctrl_c_cancels_pending_runs_cleanly(tmp_path):
    nb = toy_notebook(tmp_path / "toy.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1, 2, 3, 4]\nsleep: [1.0]\n")
    out = tmp_path / "sweep"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vizkit.cli",
            "run",
            str(nb),
            "--grid",
            str(grid),
            "--output-dir",
            str(out),
            "--workers",
            "1",
        ],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as a terminal starts a foreground command: SIGINT at its default even when this test runs in a
        # background job, whose children inherit SIGINT ignored (Python then never raises KeyboardInterrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(out.glob("*/.complete.json")):
            time.sleep(0.2)
        assert any(out.glob("*/.complete.json")), "no run finished"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "vizkit run: interrupted:" in err and "Traceback" not in err
    rows = index_rows(out)
    statuses = [r["status"] for r in rows.values()]
    assert "cancelled" in statuses and statuses.count("done") >= 1 and set(statuses) <= {"done", "cancelled"}
    for name, r in rows.items():  # only finished runs are marked complete
        assert (out / name / ".complete.json").exists() == (r["status"] == "done")
    left = _group_alive(proc.pid)
    for _ in range(50):  # the workers and multiprocessing's resource tracker exit with the client
        if not left:
            break
        time.sleep(0.2)
        left = _group_alive(proc.pid)
    assert left == [], f"processes left in the group: {left}"
    # resuming finishes the cancelled runs only
    done_before = sum(s == "done" for s in statuses)
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "vizkit.cli",
            "run",
            str(nb),
            "--grid",
            str(grid),
            "--output-dir",
            str(out),
            "--workers",
            "1",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert f"{4 - done_before} done, {done_before} skipped" in again.stdout


def _group_alive(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group."""
    out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.split()[1:2] != ["Z"] and line.split()[1:2][0][0] != "Z"]


def test_sweep_on_an_existing_scheduler(tmp_path, dask_scheduler):
    nb = toy_notebook(tmp_path / "toy.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text("x: [1, 2]\nmode: [a, b]\n")
    params = tmp_path / "params.yaml"
    params.write_text("sleep: 0.1\n")
    out = tmp_path / "sweep"
    address = dask_scheduler
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vizkit.cli",
            "run",
            str(nb),
            "--grid",
            str(grid),
            "-f",
            str(params),
            "--output-dir",
            str(out),
            "--scheduler",
            address,
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"connected to the Dask scheduler {address} (2 worker(s))" in proc.stderr
    rows = index_rows(out)
    assert sorted(rows) == ["x=1__mode=a", "x=1__mode=b", "x=2__mode=a", "x=2__mode=b"]
    assert {r["status"] for r in rows.values()} == {"done"} and {r["sleep"] for r in rows.values()} == {"0.1"}
    marker = json.loads((out / "x=2__mode=b" / ".complete.json").read_text())
    assert marker["params"] == {"sleep": 0.1, "x": 2, "mode": "b"}
    assert (out / "x=2__mode=b" / "outputs" / "report.md").read_text().startswith("x=2 mode=b")


def test_grid_helpers_reject_bad_shapes():
    with pytest.raises(InputError, match="list of values"):
        expand_grid({"a": []})
    with pytest.raises(InputError, match="got str"):
        expand_grid("a")


def test_kernels_start_on_ipc_without_the_tcp_warning(tmp_path, capfd):
    """vizkit's notebook runs start the kernel on IPC sockets: no port, and no 'running over TCP
    without encryption' line; papermill's default (TCP) prints it, so the check can fail."""
    import papermill as pm

    from vizkit.distributed.execute import execute_notebook

    nb = toy_notebook(tmp_path / "toy.ipynb")
    out = tmp_path / "ran"
    executed = execute_notebook(nb, tmp_path / "ran.ipynb", {"x": 7, "output_dir": str(out)})
    assert (out / "report.md").read_text().startswith("x=7 mode=a")
    assert executed.metadata.papermill.parameters["x"] == 7
    assert "without encryption" not in capfd.readouterr().err
    pm.execute_notebook(
        str(nb),
        str(tmp_path / "tcp.ipynb"),
        parameters={"output_dir": str(out)},
        kernel_name="python3",
        progress_bar=False,
    )
    assert "Kernel is running over TCP without encryption" in capfd.readouterr().err


def test_make_demo_runner_executes_each_notebook_once_quietly(tmp_path):
    """``make demo``'s runner (python -m vizkit.demo --notebooks): one line per notebook, each run folder
    filled, a failing notebook reported (exit 1) while the next still runs, no kernel TCP warning."""
    good = toy_notebook(tmp_path / "a_good.ipynb")
    bad = nbformat.read(good, as_version=4)
    bad.cells[1].source = bad.cells[1].source.replace("fail: bool = False", "fail: bool = True")
    nbformat.write(bad, tmp_path / "b_bad.ipynb")
    toy_notebook(tmp_path / "c_good.ipynb")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vizkit.demo",
            "--output-dir",
            str(out),
            "--notebooks",
            str(tmp_path / "a_good.ipynb"),
            str(tmp_path / "b_bad.ipynb"),
            str(tmp_path / "c_good.ipynb"),
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["a_good.ipynb", "c_good.ipynb"]
    assert "b_bad.ipynb failed in cell" in proc.stderr and "failing on purpose x=1" in proc.stderr
    assert "without encryption" not in proc.stderr + proc.stdout
    for stem in ("a_good", "c_good"):
        assert (out / stem / "report.md").read_text().startswith("x=1 mode=a")
        assert (out / f"{stem}.ipynb").is_file()
