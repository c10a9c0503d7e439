"""Sphinx configuration: the narrative pages are Markdown (MyST), the API reference comes from the
numpydoc docstrings (autodoc + numpydoc), the CLI reference from the argument parser (sphinx-argparse).
Built by `make docs` with warnings as errors."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from quantconf import __version__  # noqa: E402

project = "quantconf"
author = "the quantconf developers"
release = version = __version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "numpydoc", "sphinxarg.ext"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
html_theme = "alabaster"
html_theme_options = {"description": "what quantization does to a language model's confidence"}
