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


def test_every_results_file_gets_a_page_with_its_plots(html: pathlib.Path) -> None:
    results = ROOT / "benchmarks" / "results"
    for source in results.glob("*.md"):
        page = (html / "results" / f"{source.stem}.html").read_text(encoding="utf-8")
        title = source.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        assert title.split(":")[0] in page
    plots = {p.name for p in results.glob("*.png")}
    assert plots <= {p.name for p in (html / "_images").iterdir()}
