"""The documentation site builds with warnings as errors and covers the API."""

import pathlib
import re
import subprocess
import sys

import pytest

import aadam_optax

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("docs")
    subprocess.run(
        [
            *(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q"),
            *("-b", "html", "-d", str(out / "doctrees")),
            *(str(ROOT / "docs"), str(out / "html")),
        ],
        cwd=ROOT,
        check=True,
    )
    return out / "html"


def test_api_reference_documents_every_public_name(html: pathlib.Path) -> None:
    api = (html / "api.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'id="aadam_optax\.(\w+)"', api))
    assert set(aadam_optax.__all__) <= documented
    # The docstrings' math reaches MathJax instead of showing as raw markup.
    assert r"\theta_{n+1}" in api
    assert "mathjax" in api.lower()


def test_math_renders_without_a_network(html: pathlib.Path) -> None:
    """MathJax is loaded from the built site itself, never from a CDN."""
    api = (html / "api.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", api)
    math = [src for src in scripts if re.search("mathjax|katex", src, re.I)]
    assert math, scripts
    for src in math:
        assert not re.match(r"(https?:)?//", src), src
        assert "cdn" not in src.lower(), src
        vendored = html / src.split("?")[0]
        assert vendored.is_file(), vendored
        assert vendored.stat().st_size > 100_000  # MathJax itself, not a stub
    # The fonts MathJax's HTML output asks for, next to it.
    fonts = html / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert any(fonts.glob("*.woff"))
    # No page loads math from elsewhere.
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"src=\"(https?:)?//[^\"]*(mathjax|katex)", text, re.I), (
            page
        )


def test_links_between_pages_reach_their_sections(html: pathlib.Path) -> None:
    """A link to a section of another page names an anchor that page has
    (a misspelt anchor builds without a warning, and lands at the top)."""
    for page in html.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r'href="([\w-]+\.html)#([^"]+)"', text):
            ids = re.findall(r'id="([^"]+)"', (html / target).read_text("utf-8"))
            assert anchor in ids, f"{page.name} links to {target}#{anchor}"


def test_every_results_file_gets_a_page_with_its_plots(html: pathlib.Path) -> None:
    results = ROOT / "benchmarks" / "results"
    for source in results.glob("*.md"):
        page = (html / "results" / f"{source.stem}.html").read_text(encoding="utf-8")
        title = source.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        assert title.split(":")[0] in page
    plots = {p.name for p in results.glob("*.png")}
    assert plots <= {p.name for p in (html / "_images").iterdir()}


# The python blocks of the hand-written pages; docs/nnx.md's recipes have their
# own checks in tests/test_recipes.py.
PAGE_BLOCKS = [
    (
        f"{page.name}:{page.read_text('utf-8').count(chr(10), 0, match.start()) + 1}",
        match.group(1),
    )
    for page in sorted((ROOT / "docs").glob("*.md"))
    if page.name != "nnx.md"
    for match in re.finditer(
        r"```python\n(.*?)```", page.read_text("utf-8"), flags=re.DOTALL
    )
]


@pytest.mark.parametrize(
    "code", [code for _, code in PAGE_BLOCKS], ids=[name for name, _ in PAGE_BLOCKS]
)
def test_every_python_block_of_the_pages_runs(code: str) -> None:
    exec(code, {})  # noqa: S102 - the docs' own examples
