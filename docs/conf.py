"""Sphinx configuration for the aadam-optax documentation."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aadam_optax  # noqa: E402  (needs the path above when not installed)

project = "aadam-optax"
author = "aadam-optax contributors"
copyright = "aadam-optax contributors"
release = aadam_optax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    # MathJax 3 shipped in the package and copied into _static/mathjax/, so the
    # formulas render without a network (Sphinx's default is a CDN URL).
    "sphinx-mathjax-offline",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# The results pages include benchmarks/results/*.md, and the changelog page
# CHANGELOG.md, written for GitHub: their headings start at whatever level
# suits their own file, and their links to repository files (scripts, CSVs)
# have no page here, so they render as plain text instead of failing the build.
suppress_warnings = ["myst.header", "myst.xref_missing"]
myst_heading_anchors = 3

autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
# Keep the names users know instead of expanding the unions behind them.
autodoc_type_aliases = {
    name: name
    for name in (
        "jax.typing.ArrayLike",
        "optax.Params",
        "optax.Updates",
        "optax.ScalarOrSchedule",
    )
} | {"Variant": "aadam_optax.Variant"}
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"aadam-optax {release}"


def _drop_inherited_data_docstrings(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Keep `VARIANTS` from showing the docstring of `tuple`."""
    if what == "data" and obj.__doc__ == type(obj).__doc__:
        lines.clear()


def _write_results_pages() -> None:
    """One page per `benchmarks/results/*.md`, its plots shown below it.

    The pages are generated, not committed, so that a results file added or
    renamed by a benchmark run appears here without editing the docs.
    """
    results = ROOT / "benchmarks" / "results"
    pages = Path(__file__).resolve().parent / "results"
    pages.mkdir(exist_ok=True)
    for stale in pages.glob("*.md"):
        stale.unlink()
    for source in sorted(results.glob("*.md")):
        text = source.read_text(encoding="utf-8")
        page = [
            f"```{{include}} ../../benchmarks/results/{source.name}",
            ":relative-images:",
            "```",
        ]
        for plot in sorted(results.glob(f"{source.stem}*.png")):
            # Shown unless the file already embeds it as an image (a mere
            # mention of the name in the text does not show it).
            if f"]({plot.name})" not in text:
                page += ["", f"![{plot.stem}](../../benchmarks/results/{plot.name})"]
        (pages / source.name).write_text("\n".join(page) + "\n", encoding="utf-8")


# The pages link to a results file by its path in the repository
# (`../benchmarks/results/speed.md`), so that the link works where the page is
# read as Markdown (GitHub, an editor); in this site it goes to the file's page
# (`results/speed.md`, written by `_write_results_pages`).
_RESULTS_LINK = re.compile(r"\]\(\.\./benchmarks/results/([\w.-]+\.md)(#[^)\s]*)?\)")


def _link_results_files_to_their_pages(
    app: Sphinx, docname: str, source: list[str]
) -> None:
    if "/" not in docname:  # the hand-written pages, not the results pages
        source[0] = _RESULTS_LINK.sub(r"](results/\1\2)", source[0])


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _drop_inherited_data_docstrings)
    app.connect("source-read", _link_results_files_to_their_pages)
    _write_results_pages()
