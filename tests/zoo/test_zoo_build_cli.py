"""``python -m vizkit.zoo``: argument handling and how several builds are run (fresh interpreters,
in ``--jobs`` lanes balanced by the measured build times)."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import time

import pytest
import torch

from vizkit.errors import VizkitError
from vizkit.zoo import __main__ as cli
from vizkit.zoo import entry, names
from vizkit.zoo.common import REGISTRY


def fake_builds(monkeypatch, body: str, calls: list | None = None):
    """Replace each model's build by a small real child process running ``body`` (``name`` and
    ``flags`` are defined in it)."""

    def command(name, flags):
        if calls is not None:
            calls.append((name, list(flags)))
        return [sys.executable, "-c", f"import sys, time, pathlib\nname, flags = {name!r}, {flags!r}\n{body}"]

    monkeypatch.setattr(cli, "build_command", command)


def test_the_build_command_is_a_fresh_interpreter_per_model():
    assert cli.build_command("tiny_vlm", ["--out", "z", "--threads", "1"]) == [
        sys.executable,
        "-m",
        "vizkit.zoo",
        "build",
        "tiny_vlm",
        "--out",
        "z",
        "--threads",
        "1",
    ]


def test_unknown_name_is_refused_with_the_valid_names(capsys):
    assert cli.main(["build", "mnist_vt"]) == 2
    err = capsys.readouterr().err
    assert "unknown zoo model(s) mnist_vt" in err and "mnist_vit" in err


def test_several_models_each_get_the_flags_and_their_output_is_tagged(monkeypatch, tmp_path, capsys):
    calls = []
    fake_builds(monkeypatch, "print('hello from', name)\nprint(f'[{name}] step 1')", calls)
    # a model whose checkpoint was built at 2 threads is rebuilt at 2, the others at theirs (1)
    monkeypatch.setitem(REGISTRY, "tiny_vlm", dataclasses.replace(entry("tiny_vlm"), build_threads=2))
    assert cli.main(["build", "mnist_vit", "tiny_vlm", "--quick", "--out", str(tmp_path), "--jobs", "1"]) == 0
    flags = ["--out", str(tmp_path), "--threads", "{}", "--quick"]
    # the longest first, each at the thread count of its shipped checkpoint
    assert entry("tiny_vlm").build_seconds > entry("mnist_vit").build_seconds
    assert [entry(n).build_threads for n in ("tiny_vlm", "mnist_vit")] == [2, 1]
    assert calls == [("tiny_vlm", [f.format(2) for f in flags]), ("mnist_vit", [f.format(1) for f in flags])]
    out = capsys.readouterr().out
    assert "== building 2 models, one interpreter each, 1 at a time, 1 (tiny_vlm 2) torch thread(s)" in out
    assert "this machine's sgemm" in out
    lines = out.splitlines()
    assert "[tiny_vlm] hello from tiny_vlm" in lines and "[mnist_vit] hello from mnist_vit" in lines
    assert "[tiny_vlm] step 1" in lines  # a line already tagged is not tagged twice
    assert "== all 2 done in" in out


def test_no_names_builds_every_model_in_balanced_lanes(monkeypatch, tmp_path, capsys):
    calls = []
    fake_builds(monkeypatch, "pass", calls)
    assert cli.main(["build", "--out", str(tmp_path)]) == 0
    order = [n for n, _ in calls]
    lanes = cli.plan_lanes({n: entry(n).build_seconds for n in names()}, cli.BUILD_JOBS)
    assert sorted(order) == names() and len(lanes) == 2
    for lane in lanes:  # each lane's builds start in the lane's order
        assert [n for n in order if n in lane] == lane
    assert order[:2] == [lanes[0][0], lanes[1][0]]  # the lanes start together
    assert all("--quick" not in f for _, f in calls)
    assert "== lanes (measured build times): " + " + ".join(lanes[0]) in capsys.readouterr().out


def test_lanes_minimise_the_longest_by_hand():
    # the greedy (each build to the lane free first, longest first) gives 1010+448+273 = 1731
    # against 907+615 = 1522; the best split is 1010+615 = 1625 against 907+448+273 = 1628
    s = {"a": 1010.0, "b": 907.0, "c": 615.0, "d": 448.0, "e": 273.0}
    assert cli.plan_lanes(s, 2) == [["a", "c"], ["b", "d", "e"]]
    assert cli.plan_lanes(s, 1) == [["a", "b", "c", "d", "e"]]
    # more jobs than builds: one lane per build; none empty
    assert cli.plan_lanes({"x": 1.0, "y": 2.0}, 4) == [["y"], ["x"]]
    # 3 lanes: a and b apart, c with neither (>= 1522); c+d = 1063 leaves e to b (1180) or a
    # (1283); c+e = 888 leaves d to b (1355); c+d+e = 1336: the best is a | b+e | c+d
    assert cli.plan_lanes(s, 3) == [["a"], ["b", "e"], ["c", "d"]]
    # no measured times (an entry without build_seconds): still every lane used
    zero = cli.plan_lanes({"x": 0.0, "y": 0.0, "z": 0.0}, 2)
    assert len(zero) == 2 and all(zero) and sorted(sum(zero, [])) == ["x", "y", "z"]
    assert sorted(map(len, cli.plan_lanes({f"m{i}": 0.0 for i in range(30)}, 3))) == [10, 10, 10]
    # many builds: the greedy, still balanced and complete
    many = {f"m{i:02d}": float(i % 7 + 1) for i in range(30)}
    lanes = cli.plan_lanes(many, 4)
    assert sorted(n for lane in lanes for n in lane) == sorted(many)
    loads = [sum(many[n] for n in lane) for lane in lanes]
    assert max(loads) - min(loads) <= 7


# each child marks itself running, looks (twice, 0.4 s apart) how many are running, then unmarks
OVERLAP = """
run, seen = pathlib.Path(flags[1]) / 'running', pathlib.Path(flags[1]) / 'seen'
run.mkdir(exist_ok=True); seen.mkdir(exist_ok=True)
(run / name).touch()
counts = []
for _ in range(2):
    time.sleep(0.4)
    counts.append(len(list(run.iterdir())))
(seen / name).write_text(str(max(counts)))
(run / name).unlink()
"""


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_at_most_jobs_builds_run_at_once_and_that_many_do(monkeypatch, tmp_path, jobs):
    fake_builds(monkeypatch, OVERLAP)
    todo = ["mnist_vit", "shapes_clip", "shapes_clip_cnn"]
    assert cli.main(["build", *todo, "--out", str(tmp_path), "--jobs", str(jobs)]) == 0
    seen = {p.name: int(p.read_text()) for p in (tmp_path / "seen").iterdir()}
    assert sorted(seen) == sorted(todo) and max(seen.values()) == jobs


def test_a_failed_build_starts_no_more_lets_the_running_finish_and_says_how_to_rerun(monkeypatch, tmp_path, capsys):
    body = """
if name == 'shapes_clip':
    sys.exit(3)
time.sleep(1.0)
(pathlib.Path(flags[1]) / name).write_text('built')
"""
    fake_builds(monkeypatch, body)
    # longest first: tiny_vlm and shapes_clip start; shapes_clip fails; tiny_vlm finishes; mnist_vit never starts
    assert cli.main(["build", "mnist_vit", "shapes_clip", "tiny_vlm", "--out", str(tmp_path), "--jobs", "2"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_vlm"]
    err = capsys.readouterr().err
    assert "building shapes_clip failed (exit code 3)" in err
    assert f"python -m vizkit.zoo build shapes_clip --out {tmp_path} --threads 1" in err
    assert "not started after the failure: mnist_vit" in err and "the models built are saved: tiny_vlm" in err


def test_an_interrupt_stops_the_running_builds(monkeypatch, tmp_path):
    fake_builds(monkeypatch, "time.sleep(30)\n(pathlib.Path(flags[1]) / name).write_text('built')")
    real_sleep = time.sleep

    def interrupted(seconds):
        real_sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", interrupted)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        cli.main(["build", "mnist_vit", "tiny_vlm", "--out", str(tmp_path), "--jobs", "2"])
    assert time.perf_counter() - start < 10 and list(tmp_path.iterdir()) == []


def test_thread_and_job_counts_are_passed_on_and_checked(monkeypatch, tmp_path, capsys):
    calls = []
    fake_builds(monkeypatch, "pass", calls)
    threads = torch.get_num_threads()
    assert cli.main(["build", "mnist_vit", "shapes_clip", "--threads", "2", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # the parent keeps its thread count
    assert [f[f.index("--threads") + 1] for _, f in calls] == ["2", "2"]
    assert "1 at a time, 2 torch thread(s) each" in capsys.readouterr().out
    assert cli.main(["build", "mnist_vit", "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
    assert cli.main(["build", "mnist_vit", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


def test_list_names_every_model(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == names()
    assert [int(line.split()[1]) for line in lines] == [entry(n).build_threads for n in names()]


def test_machine_yardstick_leaves_random_states_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert cli.sgemm_gflops(size=64, seconds=0.05) > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_an_unwritable_output_folder_is_refused_before_any_build(monkeypatch, tmp_path, capsys):
    calls = []
    fake_builds(monkeypatch, "pass", calls)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["build", "mnist_vit", "shapes_clip", "--out", str(blocker / "zoo")]) == 2
    assert calls == [] and f"cannot write checkpoints to {blocker / 'zoo'}" in capsys.readouterr().err


def test_every_entry_names_a_recipe_in_zoo_train_that_imports():
    """The fast check that every training recipe imports: each registry entry's ``build`` is a
    ``"module:function"`` string in ``vizkit.zoo.train`` that resolves to a callable taking
    ``out_root`` and ``quick``."""
    assert sorted(REGISTRY) == names()
    for n in names():
        spec = entry(n).build
        assert isinstance(spec, str) and spec.startswith("vizkit.zoo.train."), (n, spec)
        recipe = cli.resolve_build(spec)
        assert callable(recipe) and recipe is cli.build_function(n)
        assert recipe.__module__ == spec.split(":")[0]
        assert {"out_root", "quick"} <= set(inspect.signature(recipe).parameters), (n, spec)
    with pytest.raises(VizkitError, match="module:function"):
        cli.resolve_build("vizkit.zoo.train.mnist_vit")
    with pytest.raises(VizkitError, match="has no function 'nope'"):
        cli.resolve_build("vizkit.zoo.train.mnist_vit:nope")


def test_loading_the_zoo_imports_no_recipe():
    """The runtime zoo (registry, loading, data) never imports ``vizkit.zoo.train``, nor what
    only the builds use (scikit-learn, ``vizkit.evaluate``)."""
    code = (
        "import sys\nfrom vizkit import zoo\nfor n in zoo.names():\n    zoo.load(n)\n"
        "zoo.dataset('face_forgery_detector', 'val')\n"
        "print([m for m in sys.modules if m.startswith(('vizkit.zoo.train', 'sklearn', 'vizkit.evaluate'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
