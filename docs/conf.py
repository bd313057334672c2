"""Sphinx configuration of vizkit's documentation site (``make docs``; CONTRIBUTING.md says why Sphinx).

Offline by construction: the notebooks are shown with their committed outputs (never executed), math is
typeset by the MathJax copy installed with the ``docs`` extra (``django-static-mathjax``), served from the
site's own ``_static/``, and the theme's fonts and scripts are its own files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mathjax  # the MathJax 3 distribution as package data (django-static-mathjax)

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]

from vizkit.cli import version as _installed_version  # noqa: E402

project = "vizkit"
author = "the vizkit authors"
copyright = "vizkit authors, MIT licence"
release = _installed_version()
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "vizkit_docs",
]
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]  # _generated: included
suppress_warnings = [
    "ref.python",  # a short type name in a signature that several modules export: either target is right
    "myst.header",  # included project files (CHANGELOG.md, CONTRIBUTING.md) start below level 1 in places
]

# ---------------------------------------------------------------- notebooks and markdown
nb_execution_mode = "off"  # the committed outputs are the tutorial; the docs build never runs a kernel
nb_ipywidgets_js = {}  # no widget manager from a CDN (tutorials.py replaces the live widgets by a note)
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist", "attrs_inline"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# ---------------------------------------------------------------- API reference
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options: dict[str, object] = {}
napoleon_numpy_docstring = False  # the docstrings are prose, with Google-style "Args:" where a list helps

# ---------------------------------------------------------------- math, offline
_MATHJAX = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"
mathjax_path = _MATHJAX.name  # relative: served from the site's _static/
mathjax3_config = {
    "options": {"enableMenu": False},  # the context menu can load accessibility modules on demand
    "svg": {"fontCache": "global"},
}

# ---------------------------------------------------------------- HTML
html_theme = "pydata_sphinx_theme"
html_title = f"vizkit {release}"
html_favicon = "_static/favicon.png"  # without one the browser asks the server for /favicon.ico (a 404)
html_static_path = ["_static", str(_MATHJAX)]
html_css_files = ["vizkit.css"]
html_copy_source = False  # the tutorial sources are the notebooks in the repository
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    # the pages of wide tables get the full width (no "on this page" column)
    "secondary_sidebar_items": {
        "**": ["page-toc"],
        "reference/zoo": [],
        "reference/parameters": [],
        "reference/cli": [],
        "reference/benchmarks": [],
        "howto/vlm-families": [],
    },
    "footer_start": ["copyright"],
    "footer_end": [],
    "pygments_light_style": "tango",
    "pygments_dark_style": "monokai",
}
html_sidebars = {"index": [], "changelog": []}
html_context = {"default_mode": "auto"}  # light or dark as the reader's system prefers (the theme errors without it)
