"""The sdist and wheel are complete, and the installed wheel works on its own."""

import ast
import email
import email.message
import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile

import pytest
from packaging.requirements import Requirement

import aadam_optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERSION = aadam_optax.__version__


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The sdist, and the wheel built from it, as `python -m build` makes them."""
    out = tmp_path_factory.mktemp("dist")
    # Without isolation the build uses the installed setuptools (a `dev`
    # requirement) instead of downloading one.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
    )
    return out


def _wheel(dist: pathlib.Path) -> pathlib.Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def _metadata(dist: pathlib.Path) -> email.message.Message:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        text = wheel.read(f"aadam_optax-{VERSION}.dist-info/METADATA").decode()
    return email.message_from_string(text)


def test_twine_accepts_both_distributions(dist: pathlib.Path) -> None:
    files = [str(p) for p in dist.iterdir()]
    assert sorted(pathlib.Path(f).suffix for f in files) == [".gz", ".whl"]
    subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files], check=True
    )


def test_wheel_holds_the_package_typed_and_licensed(dist: pathlib.Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
    info = f"aadam_optax-{VERSION}.dist-info/"
    assert {n.split("/")[0] + "/" for n in names} == {"aadam_optax/", info}
    assert "aadam_optax/py.typed" in names
    assert f"{info}licenses/LICENSE" in names
    metadata = _metadata(dist)
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "Apache-2.0"


def test_sdist_holds_what_a_rebuild_needs(dist: pathlib.Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[-1] for n in archive.getnames()}
    assert {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "aadam_optax/__init__.py",
        "aadam_optax/py.typed",
    } <= names


def test_runtime_requirements_are_what_the_package_imports(dist: pathlib.Path) -> None:
    required = {
        Requirement(r).name
        for r in _metadata(dist).get_all("Requires-Dist")
        if Requirement(r).marker is None
    }
    imported = set()
    for source in (ROOT / "aadam_optax").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"aadam_optax"}
    assert required == third_party


def test_installed_wheel_imports_and_steps_outside_the_source_tree(
    dist: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    # A PYTHONPATH holding the source tree would shadow the wheel, and its
    # egg-info would make pip think the package is already installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
    )
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
        + ["--no-deps", "--no-index", str(_wheel(dist))],
        check=True,
        env=env,
    )
    # Reuse this interpreter's jax and optax instead of downloading them again.
    # A plain path line does not run the .pth files found there, so an
    # editable install of this project stays inactive: the check on
    # `__file__` below proves the wheel's copy is the one imported.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (pathlib.Path(site) / "outer.pth").write_text("\n".join(sorted(outer)) + "\n")
    script = textwrap.dedent(
        f"""
        import importlib.metadata, pathlib
        import jax.numpy as jnp, numpy as np, optax
        import aadam_optax

        package = pathlib.Path(aadam_optax.__file__).resolve().parent
        assert package == pathlib.Path({site!r}).resolve() / "aadam_optax", package
        assert (package / "py.typed").is_file()
        assert importlib.metadata.version("aadam-optax") == aadam_optax.__version__

        # From a fresh state m = (1 - b1) g, v = (1 - b2) g^2, so after bias
        # correction Adam's direction is g / (|g| + eps); AAdam's first step is
        # b1 times it (sign(g_0) = 0 cancels the memory term). float32's
        # 1 - b2 and square root leave a few 1e-6 of relative error.
        g = np.array([0.5, -2.0, 0.0, 3e-3], np.float32)
        lr, b1, eps = 0.1, 0.9, 1e-8
        tx = aadam_optax.aadam(lr, b1=b1, eps=eps)
        params = jnp.ones(4, jnp.float32)
        updates, _ = tx.update(jnp.asarray(g), tx.init(params), params)
        expected = -lr * b1 * g / (np.abs(g) + eps)
        np.testing.assert_allclose(updates, expected, rtol=2e-5)
        print("ok")
        """
    )
    run = subprocess.run(
        [python, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
