"""The README's code runs, and CI runs the README's test command."""

import pathlib
import re
import subprocess

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


# Every ```python block of the README, with the line it starts on.
BLOCKS = [
    (README.count("\n", 0, match.start()) + 1, match.group(1))
    for match in re.finditer(r"```python\n(.*?)```", README, flags=re.DOTALL)
]


def _block(marker: str) -> str:
    (code,) = [code for _, code in BLOCKS if marker in code]
    return code


def test_nnx_quickstart_trains():
    namespace: dict = {}
    exec(_block("nnx.Optimizer"), namespace)  # noqa: S102 - the README's own code
    losses = namespace["losses"]
    assert losses[-1] < 0.25 * losses[0]


def test_optax_example_runs_and_converges():
    namespace: dict = {}
    exec(_block('p["w"] - 3.0'), namespace)  # noqa: S102 - the README's own code
    # The example minimises sum((w - 3)^2) from w = 0: it must end near 3.
    assert jnp.allclose(namespace["params"]["w"], 3.0, atol=1e-2)


def test_cautious_adamw_is_a_one_line_switch_from_adamw():
    """The Cautious AdamW block swaps optax.adamw for cautious_adamw with the
    same arguments, and that optimizer trains the NNX quickstart's model."""
    switch = _block("cautious_adamw")
    arguments = re.search(r"# tx = optax\.adamw\((.*)\)\n", switch).group(1)
    assert f"tx = aadam_optax.cautious_adamw({arguments})" in switch
    exec(switch, {})  # noqa: S102 - the README's own code
    quickstart = _block("nnx.Optimizer")
    assert quickstart.count("aadam_optax.aadamw(") == 1
    namespace: dict = {}
    cautious = quickstart.replace("aadam_optax.aadamw(", "aadam_optax.cautious_adamw(")
    exec(cautious, namespace)  # noqa: S102 - the README's own code
    losses = namespace["losses"]
    assert losses[-1] < 0.25 * losses[0]


@pytest.mark.parametrize(
    "code", [code for _, code in BLOCKS], ids=[f"line-{n}" for n, _ in BLOCKS]
)
def test_every_python_block_runs(code: str):
    """Each block runs on its own, as a reader would paste it."""
    exec(code, {})  # noqa: S102 - the README's own examples


def test_links_to_repository_files_resolve():
    """The landing page's links to docs pages, results and plots exist."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert "docs/nnx.md" in local and "docs/evidence.md" in local
    for target in local:
        assert (ROOT / target).exists(), target


def test_main_job_results_have_their_place():
    # The main job's measured figures go right after the two commands.
    first_screen = README.split("## ", 1)[0]
    assert "<!-- main-job-results -->" in first_screen
    assert "python examples/train_transformer.py" in first_screen


def test_ci_runs_the_readme_test_command():
    # .ci/run extracts the block after the test-command marker; check it finds
    # the same command a reader sees.
    block = README.split("<!-- test-command -->", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", block, flags=re.DOTALL).group(1)
    extracted = subprocess.run(
        ["awk", _awk_program(), "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command.strip()
    assert "pytest" in extracted


def _awk_program() -> str:
    script = (ROOT / ".ci" / "run").read_text()
    return re.search(r"awk '\n(.*?)\n' README.md", script, flags=re.DOTALL).group(1)
