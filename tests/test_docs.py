"""The documentation site builds with warnings as errors and covers the API."""

import csv
import json
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


# The pages a reader may open as Markdown in the repository (on GitHub, in an
# editor), each with the page it becomes in the built site (None: not in it).
MARKDOWN_PAGES = {"README.md": None, "CHANGELOG.md": "changelog.html"} | {
    f"docs/{page.name}": f"{page.stem}.html"
    for page in sorted((ROOT / "docs").glob("*.md"))
}


def _relative_links(markdown: str) -> list[str]:
    """The targets of the page's inline links and images, but for URLs and
    links within the page; code blocks and code spans are not links."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.DOTALL | re.MULTILINE)
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = re.findall(r"\]\(<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\)", text)
    return [
        target
        for target in targets
        if not re.match(r"[a-zA-Z][\w+.-]*:", target) and not target.startswith("#")
    ]


def test_link_extraction_sees_links_and_images_but_not_code() -> None:
    text = (
        "A [page](guide.md#examples), ![a plot](../a.png), [site](https://x.org),\n"
        "[here](#top), `[not](code.md)` and [`code` text](b.md).\n"
        "```python\nx = [1](c.md)\n```\n"
    )
    assert _relative_links(text) == ["guide.md#examples", "../a.png", "b.md"]


@pytest.fixture(scope="module")
def repository_paths() -> set[pathlib.Path]:
    """The repository's files (committed or not, but not ignored) and their
    folders: not what a docs build generates (docs/results/ is ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    files = {ROOT / name for name in listed}
    return files | {folder for file in files for folder in file.parents}


@pytest.mark.parametrize("page", sorted(MARKDOWN_PAGES))
def test_relative_links_resolve_in_the_repository(
    repository_paths: set[pathlib.Path], page: str
) -> None:
    """Read as Markdown in the repository, every relative link reaches a file."""
    source = ROOT / page
    links = _relative_links(source.read_text(encoding="utf-8"))
    broken = {
        link
        for link in links
        if (source.parent / link.split("#")[0]).resolve() not in repository_paths
    }
    assert not broken, f"{page} links to files the repository lacks: {broken}"


def _site_path(target: pathlib.Path) -> str:
    """Where a repository file the pages link to is in the built site (a
    regular expression)."""
    relative = target.relative_to(ROOT)
    if relative.parts[0] == "docs" and relative.suffix in (".md", ".rst"):
        return re.escape(relative.relative_to("docs").with_suffix(".html").as_posix())
    if relative.parent.as_posix() == "benchmarks/results" and relative.suffix == ".md":
        return re.escape(f"results/{relative.stem}.html")
    if relative.as_posix() == "CHANGELOG.md":
        return "changelog\\.html"
    if relative.suffix == ".png":
        return re.escape(f"_images/{relative.name}")
    return rf"_downloads/\w+/{re.escape(relative.name)}"


@pytest.mark.parametrize(
    "page", [page for page, html in MARKDOWN_PAGES.items() if html is not None]
)
def test_relative_links_resolve_in_the_built_site(
    html: pathlib.Path, page: str
) -> None:
    """Each link of a page is a link (or image) of its built page, to the page
    or file it names in the repository, and that file is in the site."""
    source = ROOT / page
    built = (html / MARKDOWN_PAGES[page]).read_text(encoding="utf-8")
    # The page's own text, not the sidebar's links to every page.
    (built,) = re.findall(r'<article role="main".*?</article>', built, re.DOTALL)
    for link in _relative_links(source.read_text(encoding="utf-8")):
        path, _, anchor = link.partition("#")
        target = (source.parent / path).resolve()
        if page == "CHANGELOG.md":  # included from docs/, but written for root
            target = (ROOT / path).resolve()
        if not target.exists():
            continue  # test_relative_links_resolve_in_the_repository's case
        site = _site_path(target) + (f"#{re.escape(anchor)}" if anchor else "")
        found = re.search(rf'(?:href|src)="({site})"', built)
        assert found, f"{page}: {link} is not a link to {site}"
        assert (html / found.group(1).split("#")[0]).is_file(), (page, link)


def test_every_relative_link_of_the_site_resolves(html: pathlib.Path) -> None:
    """Every relative href and src of the built site names a file it has, and
    every link within a page an id of that page."""
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        ids = set(re.findall(r'\bid="([^"]+)"', text))
        for link in re.findall(r'\b(?:href|src)="([^"]+)"', text):
            if re.match(r"[a-zA-Z][\w+.-]*:|//", link) or link == "#":
                continue
            path, _, anchor = link.split("?")[0].partition("#")
            where = page.relative_to(html)
            if not path:
                assert anchor in ids, f"{where} links to #{anchor}"
            else:
                assert (page.parent / path).exists(), f"{where} links to {link}"


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


# docs/speed.md's figures, each read from the speed run's results:
# (label in the page's table, section of speed.csv, case contains, optimizer,
# column, the goal it answers, if any).
RESULTS = ROOT / "benchmarks" / "results"
SPEED_FIGURES = [
    *(
        (f"{name} whole step / {base}'s, {model}", "whole step", case, opt, col, goal)
        for model, case in (("Transformer", "bytes_lm"), ("CNN", "mnist_cnn"))
        for name, base, opt, col, goal in (
            ("AAdam", "Adam", "aadam[sign_change]", "ratio_to_adam", "whole_step"),
            (
                "Cautious AdamW",
                "AdamW",
                "cautious_adamw",
                "ratio_to_reference",
                "cautious_whole_step" if case == "bytes_lm" else None,
            ),
            (
                "Cautious AAdamW",
                "AAdamW",
                "cautious_aadamw",
                "ratio_to_reference",
                "cautious_whole_step" if case == "bytes_lm" else None,
            ),
        )
    ),
    *(
        (
            f"{name} isolated update / {base}'s, 1e7 params, {layout}",
            "isolated update",
            case,
            opt,
            col,
            goal,
        )
        for layout, case in (
            ("one leaf", "one leaf layout, float32"),
            ("200 leaves", "many leaf layout, float32"),
        )
        for name, base, opt, col, goal in (
            ("AAdam", "Adam", "aadam[sign_change]", "ratio_to_adam", "isolated_update"),
            ("Cautious AdamW", "AdamW", "cautious_adamw", "ratio_to_reference", None),
            (
                "Cautious AAdamW",
                "AAdamW",
                "cautious_aadamw",
                "ratio_to_reference",
                None,
            ),
        )
    ),
]
# State bytes per float32 parameter, from speed_run.json.
STATE_FIGURES = {
    "State bytes per parameter, Adam": "adam",
    "State bytes per parameter, AAdam": "aadam",
    "State bytes per parameter, AAdam, bfloat16 mu and prev_update": (
        "aadam(mu_dtype=bf16, prev_update_dtype=bf16)"
    ),
    "State bytes per parameter, AAMSGrad": "aamsgrad",
    "State bytes per parameter, Cautious AdamW": "cautious_adamw",
    "State bytes per parameter, Cautious AAdamW": "cautious_aadamw",
}
# The bounds the run was checked against, for a run JSON that predates them.
GOALS = {"whole_step": 1.03, "isolated_update": 1.40, "cautious_whole_step": 1.03}


def _speed_results() -> tuple[list[dict[str, str]], dict]:
    with (RESULTS / "speed.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    run = json.loads((RESULTS / "speed_run.json").read_text(encoding="utf-8"))
    return rows, run


def _ratio(value: float, goal: float | None) -> str:
    """Two decimals, or three where two would round a miss onto the goal (as
    the Goals lines of benchmarks/results/speed.md)."""
    if goal is not None and value > goal and round(value, 2) <= goal:
        return f"{value:.3f}"
    return f"{value:.2f}"


def _speed_table() -> dict[str, list[str]]:
    """docs/speed.md's figures table: label -> the other cells."""
    page = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    table = page.split("<!-- speed-figures -->")[1].split("<!-- end-speed-figures")[0]
    cells = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| figure")
    ]
    return {row[0]: row[1:] for row in cells}


def test_speed_page_quotes_the_speed_run() -> None:
    """Each figure of docs/speed.md is the stored run's, rounded as the page
    rounds it, with the verdict against its goal; the page names the run."""
    rows, run = _speed_results()
    bounds = GOALS | {k: v["at_most"] for k, v in run.get("goals", {}).items()}
    table = _speed_table()
    expected: dict[str, tuple[str, str, str]] = {}
    for label, section, case, optimizer, column, goal in SPEED_FIGURES:
        (row,) = [
            r
            for r in rows
            if r["section"] == section
            and case in r["case"]
            and r["optimizer"] == optimizer
            and (section != "isolated update" or float(r["size"]) == 1e7)
        ]
        value = float(row[column])
        quartiles = (
            ("reference_ratio_q25", "reference_ratio_q75")
            if column == "ratio_to_reference"
            else ("ratio_q25", "ratio_q75")
        )
        iqr = "[{:.2f}-{:.2f}]".format(*(float(row[q]) for q in quartiles))
        bound = bounds[goal] if goal else None
        verdict = "-"
        if bound is not None:
            verdict = f"<= {bound:.2f}: " + ("met" if value <= bound else "not met")
        expected[label] = (_ratio(value, bound), iqr, verdict)
    for label, name in STATE_FIGURES.items():
        expected[label] = (f"{run['state_bytes_per_param'][name]:g}", "-", "-")
    assert set(table) == set(expected)
    for label, cells in expected.items():
        assert tuple(table[label][:3]) == cells, label
    page = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    assert run["date"] in page and run["provenance"]["commit"][:7] in page


def test_speed_page_prose_quotes_only_tied_figures() -> None:
    """A decimal number in docs/speed.md's prose is a figure of its table, a
    goal, or the floor of the minimal memory traffic (AAdam's minimal bytes
    per parameter over Adam's, from speed.csv)."""
    rows, run = _speed_results()
    page = (ROOT / "docs" / "speed.md").read_text(encoding="utf-8")
    prose = (
        page.split("<!-- speed-figures -->")[0]
        + page.split("<!-- end-speed-figures -->")[1]
    )
    prose = re.sub(r"^```.*?^```", "", prose, flags=re.DOTALL | re.MULTILINE)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    bounds = GOALS | {k: v["at_most"] for k, v in run.get("goals", {}).items()}
    minimal = {
        r["optimizer"]: float(r["min_bytes_per_param"])
        for r in rows
        if r["section"] == "isolated update" and r["case"] == "one leaf layout, float32"
    }
    allowed = {cells[0] for cells in _speed_table().values()}
    allowed |= {f"{bound:.2f}" for bound in bounds.values()}
    allowed.add(f"{minimal['aadam[sign_change]'] / minimal['adam']:.2f}")
    quoted = set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose))
    assert quoted <= allowed, quoted - allowed
