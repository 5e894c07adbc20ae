"""Sphinx configuration of the skretrieval documentation site (``make docs``).

The build is offline: no intersphinx, no downloads. Warnings fail it (``sphinx-build -W``).
"""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The gallery runs on CPU and must never try to reach a GPU or the network.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import skretrieval  # noqa: E402

project = "scikit-retrieval"
author = "skretrieval developers"
copyright = "skretrieval developers"
release = skretrieval.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "examples",  # the gallery's sources: sphinx-gallery renders them into auto_examples/
    "generated/**/*.md",
    "auto_examples/*.ipynb",
    "Thumbs.db",
    ".DS_Store",
]

# API pages: one page per public name, written by autosummary at build time into generated/.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False}
autodoc_typehints = "none"
# The class template lists the methods itself; numpydoc's own member tables would repeat them.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Types become cross-references word by word, so fitted-attribute names in shapes such as
# ``(n_components_, n_features)`` are not read as reST link targets.
numpydoc_xref_param_type = True
numpydoc_xref_ignore = {"of", "or", "and", "shape", "default", "optional", "-like"}
# numpydoc's default aliases point into the Python and NumPy inventories, which an offline
# build (no intersphinx) does not have: plain object references instead.
numpydoc_xref_aliases = {
    name: name
    for name in ("bool", "boolean", "sequence", "iterable", "generator", "scalar", "callable")
} | {
    "array-like": "array-like",
    "array_like": "array_like",
    "None": "None",
    "True": "True",
    "False": "False",
    "list": "list",
    "tuple": "tuple",
    "str": "str",
    "string": "str",
    "dict": "dict",
    "float": "float",
    "int": "int",
}

# Shapes in parameter types name fitted attributes, ``(n_samples_fit_,)``: their trailing
# underscore would make them reST link targets, so they are set as literals before numpydoc
# reads the docstring (scikit-learn writes the backquotes in its sources instead).
_TYPE_LINE = re.compile(r"^(\s*\*{0,2}\w+(?:, \w+)* : )(.+)$")
_FITTED_NAME = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?=[,)\s]|$)")


def _quote_fitted_names(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        match = _TYPE_LINE.match(line)
        if match:
            lines[i] = match.group(1) + _FITTED_NAME.sub(r"``\1``", match.group(2))


def setup(app):
    # Before numpydoc (priority 500) parses the sections.
    app.connect("autodoc-process-docstring", _quote_fitted_names, priority=400)


# Markdown pages are included as they are; headings get anchors for cross-page links.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# The examples run at build time, on the CPU, with the offline MobileNetV2 weights; an example
# that raises fails the build.
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    # Rerun even when an example is unchanged: the package it calls may have changed.
    "run_stale_examples": True,
    "download_all_examples": False,
    "reference_url": {},
}

html_theme = "pydata_sphinx_theme"
html_title = f"skretrieval {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []
