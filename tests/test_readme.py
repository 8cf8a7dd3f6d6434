"""The README's code runs, and CI runs the README's test command."""

import pathlib
import re
import subprocess

import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_usage_example_runs_and_converges():
    python_blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert python_blocks, "README.md has no python example"
    namespace: dict = {}
    exec(python_blocks[0], namespace)  # noqa: S102 - the README's own example
    # The example minimises sum((w - 3)^2) from w = 0: it must end near 3.
    assert jnp.allclose(namespace["params"]["w"], 3.0, atol=1e-2)


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
