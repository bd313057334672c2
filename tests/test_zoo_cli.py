"""``python -m vizkit.zoo``: argument handling and how several builds are run."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import torch

from vizkit.zoo import __main__ as cli
from vizkit.zoo import names


def test_unknown_name_is_refused_with_the_valid_names(capsys):
    assert cli.main(["build", "mnist_vt"]) == 2
    err = capsys.readouterr().err
    assert "unknown zoo model(s) mnist_vt" in err and "mnist_vit" in err


def test_several_models_are_built_one_fresh_interpreter_each(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd) or SimpleNamespace(returncode=0))
    assert cli.main(["build", "mnist_vit", "tiny_vlm", "--quick", "--out", str(tmp_path)]) == 0
    assert calls == [[sys.executable, "-m", "vizkit.zoo", "build", n, "--out", str(tmp_path), "--threads", "2",
                      "--quick"]
                     for n in ("mnist_vit", "tiny_vlm")]
    out = capsys.readouterr().out
    assert "== building 2 models, one interpreter each, 2 torch thread(s); this machine's sgemm" in out
    assert "== all 2 done in" in out


def test_no_names_builds_every_model_in_order(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd) or SimpleNamespace(returncode=0))
    assert cli.main(["build", "--out", str(tmp_path)]) == 0
    assert [c[4] for c in calls] == names() and all("--quick" not in c for c in calls)


def test_a_failed_build_stops_the_rest_and_says_how_to_rerun_it(monkeypatch, tmp_path, capsys):
    calls = []

    def run(cmd, check):
        calls.append(cmd[4])
        return SimpleNamespace(returncode=3 if cmd[4] == "shapes_clip" else 0)

    monkeypatch.setattr(subprocess, "run", run)
    assert cli.main(["build", "mnist_vit", "shapes_clip", "tiny_vlm", "--out", str(tmp_path)]) == 3
    assert calls == ["mnist_vit", "shapes_clip"]
    err = capsys.readouterr().err
    assert "building shapes_clip failed (exit code 3)" in err
    assert f"python -m vizkit.zoo build shapes_clip --out {tmp_path} --threads 2" in err


def test_thread_count_is_passed_on_and_checked(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd) or SimpleNamespace(returncode=0))
    threads = torch.get_num_threads()
    assert cli.main(["build", "mnist_vit", "shapes_clip", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # the parent keeps its thread count
    assert all(c[c.index("--threads") + 1] == "1" for c in calls) and len(calls) == 2
    assert cli.main(["build", "mnist_vit", "--threads", "0"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


def test_list_names_every_model(capsys):
    assert cli.main(["list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == names()


def test_machine_yardstick_leaves_random_states_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert cli.sgemm_gflops(size=64, seconds=0.05) > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_an_unwritable_output_folder_is_refused_before_any_build(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: calls.append(cmd) or SimpleNamespace(returncode=0))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["build", "mnist_vit", "shapes_clip", "--out", str(blocker / "zoo")]) == 2
    assert calls == [] and f"cannot write checkpoints to {blocker / 'zoo'}" in capsys.readouterr().err
