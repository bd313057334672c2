"""The Sphinx extension of vizkit's documentation site.

When the builder starts it writes the generated pages from the package itself (``builder-inited``): the
API reference (:mod:`.api`), the CLI reference from the argparse parsers (:mod:`.cli_ref`), the notebooks'
parameters from the scenario registry (:mod:`.params`), the zoo table and cards (:mod:`.zoo`) and the
tutorial copies of the executed notebooks (:mod:`.tutorials`). When the build has finished it checks every
internal link of the site (:mod:`.links`) and fails the build on a broken one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

from . import api, cli_ref, links, params, tutorials, zoo
from .util import write_if_changed

#: the generated sources, relative to the docs folder (git-ignored)
GENERATED = (
    "reference/api/*.md",
    "reference/cli.md",
    "reference/parameters.md",
    "reference/zoo.md",
    "tutorials/[0-9][0-9]_*.ipynb",
    "_generated/*.md",
)


def generate(srcdir: Path) -> None:
    """Write every generated page under ``srcdir`` (the docs folder)."""
    os.environ.setdefault("COLUMNS", "100")  # argparse wraps usage lines at the terminal width
    api.write_pages(srcdir / "reference" / "api")
    cli_ref.write(srcdir / "reference" / "cli.md")
    params.write(srcdir / "reference" / "parameters.md")
    zoo.write(srcdir / "reference" / "zoo.md")
    tutorials.write(srcdir / "tutorials")
    from vizkit.models.vlm import family_table

    write_if_changed(srcdir / "_generated" / "vlm_families.md", family_table() + "\n")  # included by howto/vlm-families


def _on_builder_inited(app: Sphinx) -> None:
    generate(Path(app.srcdir))


def _on_build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html" or not app.config.vizkit_docs_link_check:
        return
    problems = links.check_site(Path(app.outdir))
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise ExtensionError(f"internal link check: {len(problems)} broken link(s):\n  {shown}{more}")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("vizkit_docs_link_check", True, "html", bool)  # off only for partial test builds
    app.connect("builder-inited", _on_builder_inited)
    app.connect("autodoc-process-docstring", api.fill_reexported_data_docs)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
