"""No CLI prints a Python traceback for a user error (issue 16, item 5), and a Hugging Face
CLIP folder saved without ``preprocessor_config.json`` works from the CLI."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from models import hf_clip_dir
from PIL import Image

from vizkit.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
MISSING = "/nonexistent/vizkit-test/nothing-here"
# options that name something to read: a wrong value must be a clear error (exit 2)
READS = ("path", "model", "weights", "config", "input", "dataset", "file", "encoder", "detector", "json", "dir")


def reads_a_path(dest: str) -> bool:
    return dest == "head" or (any(k in dest for k in READS) and "output" not in dest)


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def path_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.option_strings and a.nargs != 0 and a.type is None and not a.choices and reads_a_path(a.dest)
    ]


def output_option(parser: argparse.ArgumentParser) -> str:
    return next(
        a.option_strings[0] for a in parser._actions if a.option_strings and "output" in a.dest and "name" not in a.dest
    )


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "face.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def base_argv(name: str, parser: argparse.ArgumentParser, image: Path) -> list[str]:
    """The subcommand's required options with valid values (an image where one is read)."""
    argv = [name]
    for a in parser._actions:
        if a.option_strings and a.required:
            argv += [a.option_strings[0], str(image)]
    if name == "clip-gradcam":
        argv += ["--class-texts", "a cat", "a dog"]
    if name == "run":  # its positional notebook (a missing notebook: tests/distributed/test_sweep.py)
        argv.append(str(ROOT / "notebooks" / "02_vit_mnist_attention.ipynb"))
    return argv


def test_every_subcommand_is_covered():
    found = subcommands()
    assert {"clip-gradcam", "detector-attention", "detector-gradcam", "evaluate"} <= set(found)
    for name, parser in found.items():
        assert path_options(parser), f"{name} has no option that reads a path: update READS"


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_each_path_option_with_a_wrong_path_is_one_clear_error(name, image, tmp_path, capsys):
    parser = subcommands()[name]
    out = tmp_path / "out"
    for action in path_options(parser):
        opt = action.option_strings[0]
        argv = base_argv(name, parser, image)
        if opt in argv:
            argv[argv.index(opt) + 1] = MISSING
        elif action.dest == "class_texts_file":  # exclusive with --class-texts
            i = argv.index("--class-texts")
            argv[i : i + 3] = [opt, MISSING]
        else:
            argv += [opt, MISSING]
        argv += [output_option(parser), str(out)]
        capsys.readouterr()
        rc = main(argv)  # any exception other than a VizkitError would propagate here
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        assert f"vizkit {name}: error: " in err and "Traceback" not in err, (argv, err)
        assert not out.exists() or not any(out.rglob("*.png")), (argv, "wrote figures")


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_the_installed_command_prints_no_traceback(name, image, tmp_path):
    """The real process, as a user runs it: every path option of the subcommand wrong at once."""
    parser = subcommands()[name]
    argv = base_argv(name, parser, image)
    first = path_options(parser)[0].option_strings[0]
    if first in argv:
        argv[argv.index(first) + 1] = MISSING
    else:
        argv += [first, MISSING]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "vizkit.cli", *argv, output_option(parser), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and MISSING in proc.stderr, proc.stderr


def test_hf_clip_folder_without_a_processor_runs_from_the_cli(tmp_path, image, capsys):
    model, proc = hf_clip_dir(tmp_path / "clip", with_processor=False)
    assert not (tmp_path / "clip" / "preprocessor_config.json").exists()
    proc.tokenizer.save_pretrained(tmp_path / "clip")  # model + tokenizer files, no processor
    with pytest.warns(UserWarning, match="has no preprocessor_config.json: images are preprocessed from config.json"):
        rc = main(
            [
                "clip-gradcam",
                "--model",
                str(tmp_path / "clip"),
                "--image-path",
                str(image),
                "--class-texts",
                "a cat",
                "a dog",
                "--output-dir",
                str(tmp_path / "out"),
                "--cpu",
            ]
        )
    assert rc == 0, capsys.readouterr().err
    sidecar = json.loads((tmp_path / "out" / "clip_gradcam_face.json").read_text())
    # the probabilities equal the model's own, with the image preprocessed as the saved processor would
    inputs = proc(images=Image.open(image).convert("RGB"), text=["a cat", "a dog"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(-1)[0]
    np.testing.assert_allclose(sidecar["probs"], expected.numpy(), atol=1e-5)


def test_hf_clip_folder_without_a_tokenizer_names_the_missing_files(tmp_path, image, capsys):
    hf_clip_dir(tmp_path / "clip", with_processor=False)  # weights and config only
    with pytest.warns(UserWarning):
        rc = main(
            [
                "clip-gradcam",
                "--model",
                str(tmp_path / "clip"),
                "--image-path",
                str(image),
                "--class-texts",
                "a cat",
                "a dog",
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "tokenizer" in err and "tokenizer.json" in err and "preprocessor_config.json" in err, err
    assert not (tmp_path / "out").exists()
