"""The documentation site's generators and claims (``docs/``, ``docs/_ext/vizkit_docs``): the API reference holds
every exported name with its docstring, the CLI and parameter pages every flag and parameter, the tutorials every
notebook output, the link check finds broken links, the changelog shows the installed version and the
getting-started snippets run as written. ``make docs`` builds the whole site; ``tests/ui/test_docs_in_browser.py``
opens it in Chromium."""

from __future__ import annotations

import io
import json
import posixpath
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

from vizkit_docs import api, cli_ref, links, params, tutorials  # noqa: E402
from vizkit_docs import zoo as zoo_page  # noqa: E402


# ------------------------------------------------------------------ the Python API reference
def test_every_exported_name_has_a_docstring():
    assert sorted(api.undocumented()) == []


def test_docstring_lookup_follows_reexports_and_rejects_generated_ones():
    # a constant re-exported twice: its #: comment lives in vizkit.positions
    doc, origin = api.attribute_doc("vizkit.models.vlm", "TEXT")
    assert origin == "vizkit.positions" and "prompt text" in doc
    assert api.canonical("vizkit.models.vlm", "TEXT") == "vizkit.positions.TEXT"
    assert api.canonical("vizkit", "cam") == "vizkit.explain.cam"
    assert api.canonical("vizkit", "targets") == "vizkit.targets"  # a module listed in __all__
    assert api.canonical("vizkit.explain", "cam") is None  # documented where it is defined
    from dataclasses import dataclass

    @dataclass
    class NoDoc:
        x: int

    assert api._own_doc(NoDoc) is None  # the signature a dataclass writes is no docstring


def test_every_module_is_on_one_api_page():
    modules = api.module_names()
    assert "vizkit" in modules and "vizkit.explain" in modules and "vizkit.models.vlm.qwen" in modules
    assert not any(m.endswith("__main__") or m in api.DEPRECATED_SHIMS for m in modules)
    assert {api.group_of(m) for m in modules} == {key for key, _, _ in api.GROUPS}


@pytest.mark.filterwarnings("ignore:The mapping interface for autodoc options:PendingDeprecationWarning")  # napoleon
def test_api_reference_lists_every_exported_name(tmp_path):
    """Build the API pages with Sphinx (autodoc imports every module) and read its object inventory: every name
    of every ``__all__`` is an object there, or a re-export whose definition is, listed on the module's page."""
    from sphinx.application import Sphinx
    from sphinx.util.inventory import InventoryFile

    others = ["_build", "tutorials", "methods", "howto", "development", "*.md", "reference/*.md"]
    app = Sphinx(
        str(DOCS),
        str(DOCS),
        str(tmp_path / "html"),
        str(tmp_path / "doctrees"),
        "html",
        confoverrides={"exclude_patterns": others, "root_doc": "reference/api/core", "vizkit_docs_link_check": False},
        status=None,
        warning=io.StringIO(),
        freshenv=True,
    )
    app.build()
    with open(tmp_path / "html" / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", posixpath.join)
    documented = {name for kind, items in inventory.items() if kind.startswith("py:") for name in items}
    sources = {p.stem: p.read_text(encoding="utf-8") for p in (DOCS / "reference" / "api").glob("*.md")}
    missing = []
    for module in api.module_names():
        page = sources[api.group_of(module)]
        for name, target in api.reference_targets(module).items():
            if target not in documented:
                missing.append(f"{module}.{name} (documented as {target})")
            elif target != f"{module}.{name}" and f"`{module}.{name}`" not in page:
                missing.append(f"{module}.{name}: not listed on its module's page")
    assert missing == []
    assert "vizkit.explain.cam" in documented and "vizkit.positions.TEXT" in documented


# ------------------------------------------------------------------ the generated CLI and parameters pages
def test_cli_page_lists_every_subcommand_and_flag():
    from vizkit.cli import build_parser

    parser = build_parser()
    page = cli_ref.page(parser)
    subs = cli_ref.subcommands(parser)
    assert [name for name, _, _ in subs] == [
        "clip-gradcam",
        "detector-attention",
        "detector-gradcam",
        "evaluate",
        "run",
        "vlm-video",
    ]
    for name, _, sub in subs:
        section = page.split(f"## `vizkit {name}`", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                assert f"`{option}`" in section, (name, option)
    # a hand-checked row: vizkit run's --output-dir with its default
    assert "| `--output-dir` OUTPUT_DIR | `runs/sweep` |" in page


def test_cell_defaults_read_the_parameters_cell(tmp_path):
    py = tmp_path / "nb.py"
    py.write_text(
        '# %%\nimport x\n\n# %% tags=["parameters"]\nn: int = 8  # how many\nname: str = "a b"  # text\nflag = True\n\n'
        "# %%\nn = 3\n"
    )
    assert params.cell_defaults(py) == {"n": "8", "name": '"a b"', "flag": "True"}


def test_parameters_page_lists_every_parameter_of_every_notebook_with_its_default():
    from vizkit.scenarios.registry import SCENARIOS

    page = params.page()
    for spec in SCENARIOS.values():
        section = page.split(f"(params-{spec.stem})=", 1)[1].split("\n(params-", 1)[0]
        defaults = params.cell_defaults(ROOT / "notebooks" / f"{spec.notebook_stem}.py")
        for p in spec.parameters():
            assert f"| `{p.name}` |" in section, (spec.stem, p.name)
            assert f"`{defaults[p.name]}`" in section, (spec.stem, p.name)
    assert "| `num_samples` | int | `8` |" in page  # notebook 02's parameters cell: num_samples: int = 8


# ------------------------------------------------------------------ the tutorials
@pytest.mark.parametrize("path", tutorials.notebooks(), ids=lambda p: p.stem)
def test_tutorial_copy_keeps_every_output_but_the_live_widgets(path):
    from vizkit.scenarios.registry import get_scenario

    nb = json.loads(path.read_text(encoding="utf-8"))
    spec = get_scenario(path)
    shown = tutorials.page_notebook(nb, spec)
    assert "widgets" not in shown["metadata"] and "widgets" in nb["metadata"]  # the original is untouched
    assert len(shown["cells"]) == len(nb["cells"]) + 1 and shown["cells"][0] == nb["cells"][0]
    note = "".join(shown["cells"][1]["source"])
    assert "Run it yourself" in note and f"notebooks/{spec.notebook}" in note and f"params-{spec.stem}" in note
    explorers = 0
    for before, after in zip(nb["cells"][1:], shown["cells"][2:]):
        assert {k: v for k, v in before.items() if k != "outputs"} == {k: v for k, v in after.items() if k != "outputs"}
        outputs = before.get("outputs", [])
        kept = [o for o in outputs if tutorials.WIDGET not in o.get("data", {})]
        assert [o for o in after.get("outputs", []) if o in kept] == kept
        notes = [o for o in after.get("outputs", []) if o not in kept]
        widgets = [o for o in outputs if tutorials.WIDGET in o.get("data", {})]
        bars = [o for o in widgets if tutorials._PROGRESS.search("".join(o["data"].get("text/plain", "")))]
        assert len(notes) == len(widgets) - len(bars)
        assert all(spec.explorer in o["data"]["text/markdown"] for o in notes)
        explorers += len(notes)
    assert explorers == 1  # the notebook's explorer, shown as a note; its tqdm bars dropped
    if spec.number == 5:  # the video stays embedded as the notebook displayed it
        html = [
            o["data"]["text/html"]
            for c in shown["cells"]
            for o in c.get("outputs", [])
            if "text/html" in o.get("data", {})
        ]
        assert any("<video" in "".join(h) and "data:video/mp4;base64," in "".join(h) for h in html)


# ------------------------------------------------------------------ every generated page
def test_generate_writes_every_generated_page(tmp_path):
    import vizkit_docs

    from vizkit.models.vlm import family_table

    vizkit_docs.generate(tmp_path)
    for pattern in vizkit_docs.GENERATED:
        assert list(tmp_path.glob(pattern)), pattern
    assert (tmp_path / "_generated" / "vlm_families.md").read_text() == family_table() + "\n"
    assert "```{include} ../_generated/vlm_families.md" in (DOCS / "howto" / "vlm-families.md").read_text()


# ------------------------------------------------------------------ the zoo page and its cards
def test_zoo_page_includes_every_metric_card_present(tmp_path, monkeypatch):
    page_path = DOCS / "reference" / "zoo.md"
    monkeypatch.setattr(zoo_page, "CARDS", tmp_path / "cards")
    without = zoo_page.page(page_path)
    assert "No metric cards" in without and "{include}" not in without
    for name in ("mnist_vit", "tiny_vlm"):
        assert f"| `{name}` |" in without
    (tmp_path / "cards").mkdir()
    for name in ("b_card.md", "a_card.md"):
        (tmp_path / "cards" / name).write_text(f"# {name}\n")
    with_cards = zoo_page.page(page_path)
    includes = re.findall(r"```\{include\} (\S+)", with_cards)
    assert [Path(i).name for i in includes] == ["a_card.md", "b_card.md"]
    assert all((page_path.parent / i).resolve() == (tmp_path / "cards" / Path(i).name).resolve() for i in includes)


def test_zoo_page_shows_the_recorded_metrics():
    config = json.loads((ROOT / "data" / "zoo" / "mnist_vit" / "config.json").read_text())
    line = zoo_page.headline(zoo_page.recorded_metrics(config))
    assert f"test accuracy {config['metrics']['test_accuracy']:.4g}" in line and "seconds" not in line


# ------------------------------------------------------------------ the internal link check
def test_link_check_finds_missing_pages_fragments_and_foreign_loads(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.js").write_text("")
    (tmp_path / "_static" / "fragment.html").write_text('<a href="{{ nothing }}">template</a>')
    (tmp_path / "index.html").write_text(
        '<h1 id="top">t</h1><a href="#top">ok</a><a href="sub/page.html#here">ok</a><a href="#nope">bad</a>'
        '<a href="missing.html">bad</a><a href="https://example.org/">a link out is fine</a>'
        '<script src="_static/x.js"></script><script src="https://cdn.example.org/x.js"></script>'
        '<img src="data:image/png;base64,AAAA"><a href="sub/">dir</a>'
    )
    (tmp_path / "sub" / "page.html").write_text('<p id="here"></p><a href="../index.html#top">back</a>')
    (tmp_path / "sub" / "index.html").write_text('<a href="page.html#gone">bad</a>')
    problems = links.check_site(tmp_path)
    assert len(problems) == 4, problems
    assert any("'#nope'" in p for p in problems) and any("missing.html does not exist" in p for p in problems)
    assert any("cdn.example.org" in p and "another host" in p for p in problems)
    assert any(p.startswith("sub/index.html") and "no id 'gone'" in p for p in problems)


# ------------------------------------------------------------------ version and changelog
def test_changelog_shows_the_installed_version():
    import vizkit
    from vizkit.cli import version

    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, re.M)
    pyproject = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert releases and releases[0][0] == version() == pyproject == vizkit.__version__
    newest = text.split(f"## [{releases[0][0]}]", 1)[1].split("\n## [", 1)[0]
    for section in ("### Added", "### Changed", "### Deprecated", "### Fixed"):
        assert section in newest, section
    for shim in api.DEPRECATED_SHIMS:  # every deprecated import path says where it went and when it goes
        assert f"`{shim}` →" in newest, shim


# ------------------------------------------------------------------ the getting-started page runs as written
def _snippet_files(folder: Path) -> None:
    """The files the snippets name: the sample image, a timm ResNet-18, a Hugging Face ViT folder and an open_clip
    ViT-B-32, all with random weights saved as a user would save theirs."""
    import open_clip
    import timm
    import torch
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    (folder / "data" / "sample").mkdir(parents=True)
    (folder / "data" / "sample" / "chelsea.png").write_bytes((ROOT / "data" / "sample" / "chelsea.png").read_bytes())
    torch.manual_seed(0)
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(folder / "resnet18.safetensors"))
    cfg = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    ViTForImageClassification(cfg).save_pretrained(folder / "my-vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder / "my-vit")
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(folder / "ViT-B-32.safetensors"))


def test_getting_started_snippets_run_as_written(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "getting-started.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 4
    _snippet_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    spaces = []
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, "getting-started.md", "exec"), namespace)  # noqa: S102 - the page's own code
        spaces.append(namespace)
    zoo_run, timm_run, hf_run, clip_run = spaces
    assert tuple(zoo_run["explanation"].heatmap.shape) == (1, 64, 64)
    assert Image.open(tmp_path / "overlay.png").size == (224, 224)  # the 64-px input upsampled
    assert timm_run["explanation"].layers == ["layer4"]
    assert tuple(hf_run["relevance"].heatmap.shape) == (1, 32, 32) and hf_run["gradcam"].heatmap.shape == (1, 32, 32)
    assert tuple(clip_run["explanation"].heatmap.shape) == (1, 224, 224)


# ------------------------------------------------------------------ the README: short, and every link holds
def test_readme_is_short_and_its_links_hold():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "docs/_build/html" in text and "make docs" in text  # where the site is built
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 10
    for target in local:
        assert (ROOT / target).exists(), target
    for page in (
        "getting-started.md",
        "tutorials/index.md",
        "methods/index.md",
        "howto/index.md",
        "reference/index.md",
    ):
        assert f"docs/{page}" in local, page


def test_readme_snippet_runs_as_written(monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert tuple(namespace["explanation"].heatmap.shape) == (1, 64, 64)
