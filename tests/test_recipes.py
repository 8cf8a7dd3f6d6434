"""The Flax NNX recipes of docs/nnx.md run, and do what the page says.

Each `##` section of the page holds one ```python block. A test runs it as a
reader would paste it, then checks the section's claim on the objects the block
left behind. The sharded recipe needs 8 devices, which `XLA_FLAGS` must set
before JAX starts, so it runs in a subprocess (this pytest process keeps its
single device), with the checks appended to the block.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "nnx.md").read_text(encoding="utf-8")


def _recipes() -> dict[str, str]:
    """The page's python block under each `## ` heading."""
    recipes = {}
    for section in re.split(r"^## ", PAGE, flags=re.MULTILINE)[1:]:
        heading = section.splitlines()[0].strip()
        blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
        assert len(blocks) == 1, f"{heading!r} should hold one python block"
        recipes[heading] = blocks[0]
    return recipes


RECIPES = _recipes()


def run(heading: str) -> dict:
    namespace: dict = {"__name__": "recipe"}
    exec(RECIPES[heading], namespace)  # noqa: S102 - the docs' own code
    return namespace


def test_every_section_is_tested():
    assert set(RECIPES) == {
        "A weight-decay mask on NNX state",
        "Save and restore model and optimizer with Orbax",
        "Sharded optimizer state",
        "A callable mask under inject_hyperparams",
    }


def test_mask_on_nnx_state_decays_kernels_only():
    ns = run("A weight-decay mask on NNX state")
    assert ns["losses"][-1] < 0.5 * ns["losses"][0]

    # The dict-style mask the page warns about fails as it says.
    model = ns["model"]
    dict_mask = lambda p: {k: v.ndim > 1 for k, v in p.items()}  # noqa: E731
    with pytest.raises(AttributeError, match="ndim"):
        nnx.Optimizer(
            model,
            ns["aadam_optax"].aadamw(learning_rate=1e-3, mask=dict_mask),
            wrt=nnx.Param,
        )

    # From a fresh state, a zero gradient leaves only the weight decay.
    optimizer = nnx.Optimizer(model, ns["tx"], wrt=nnx.Param)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    zero_grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, zero_grads)
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    shrink = 1 - 3e-3 * 1e-2
    for layer in ("linear1", "linear2"):
        np.testing.assert_allclose(
            after[layer]["kernel"], shrink * before[layer]["kernel"], rtol=1e-6
        )
        assert not np.array_equal(after[layer]["kernel"], before[layer]["kernel"])
        np.testing.assert_array_equal(after[layer]["bias"], before[layer]["bias"])
    np.testing.assert_array_equal(after["norm"]["scale"], before["norm"]["scale"])
    np.testing.assert_array_equal(after["norm"]["bias"], before["norm"]["bias"])


def _leaves(tree) -> list:
    return jax.tree.leaves(nnx.state(tree))


def test_orbax_restores_model_and_optimizer_exactly():
    ns = run("Save and restore model and optimizer with Orbax")
    saved = _leaves((ns["model"], ns["optimizer"]))
    restored = _leaves((ns["restored_model"], ns["restored_optimizer"]))
    assert len(saved) == len(restored) > 10
    dtypes = set()
    for old, new in zip(saved, restored, strict=True):
        assert old.dtype == new.dtype and old.shape == new.shape
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
        dtypes.add(np.dtype(new.dtype).name)
    assert {"int8", "int32", "float32"} <= dtypes  # signs, count, moments
    assert int(ns["restored_optimizer"].step[...]) == 5

    step, x, y = ns["train_step"], ns["x"], ns["y"]
    loss = step(ns["model"], ns["optimizer"], x, y)
    restored_loss = step(ns["restored_model"], ns["restored_optimizer"], x, y)
    assert np.array_equal(np.asarray(loss), np.asarray(restored_loss))
    for old, new in zip(
        _leaves((ns["model"], ns["optimizer"])),
        _leaves((ns["restored_model"], ns["restored_optimizer"])),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


SHARDING_CHECKS = textwrap.dedent(
    """

    # --- checks appended by tests/test_recipes.py ---
    assert jax.device_count() == 8, jax.devices()
    assert losses[-1] < losses[0], losses


    def check(model, optimizer):
        params = {
            jax.tree_util.keystr(path): leaf.sharding
            for path, leaf in jax.tree_util.tree_leaves_with_path(
                nnx.state(model, nnx.Param)
            )
        }
        assert {s.spec for s in params.values()} > {P()}, params  # some sharded
        mirrored = replicated = 0
        for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(optimizer)):
            name = jax.tree_util.keystr(path)
            owners = [p for p in params if p in name]
            if owners:
                (owner,) = owners
                assert leaf.sharding.is_equivalent_to(params[owner], leaf.ndim), (
                    name, leaf.sharding, params[owner])
                mirrored += 1
            else:  # the step counts
                assert leaf.ndim == 0, name
                assert len(leaf.sharding.device_set) == 8, (name, leaf.sharding)
                assert leaf.sharding.is_fully_replicated, (name, leaf.sharding)
                replicated += 1
        # mu, nu, prev_update, prev_grad_sign per param; two counts.
        assert mirrored == 4 * len(params) and replicated >= 2, (mirrored, replicated)


    check(model, optimizer)
    check(restored_model, restored_optimizer)
    for old, new in zip(
        jax.tree.leaves(nnx.state((model, optimizer))),
        jax.tree.leaves(nnx.state((restored_model, restored_optimizer))),
        strict=True,
    ):
        assert (old == new).all()
    with jax.set_mesh(mesh):
        assert train_step(model, optimizer, x, y) == train_step(
            restored_model, restored_optimizer, x, y
        )
    check(restored_model, restored_optimizer)
    print("recipe checks passed")
    """
)


def test_sharded_state_follows_params_on_eight_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    code = RECIPES["Sharded optimizer state"] + SHARDING_CHECKS
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "recipe checks passed" in result.stdout


def test_inject_hyperparams_mask_needs_static_args():
    ns = run("A callable mask under inject_hyperparams")
    undecayed, decayed = ns["updates_undecayed"], ns["updates_decayed"]
    params = ns["params"]
    # The pitfall: no decay anywhere, and no error.
    for leaf in jax.tree.leaves(undecayed):
        np.testing.assert_array_equal(leaf, 0.0)
    # The fix: the kernel decays by learning_rate * weight_decay, the bias not.
    np.testing.assert_allclose(decayed["kernel"], -1e-2 * 0.5 * params["kernel"])
    np.testing.assert_array_equal(decayed["bias"], 0.0)

    # With nnx.Optimizer the hyperparameters stay where the page says.
    model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, ns["decayed"], wrt=nnx.Param)
    assert float(optimizer.opt_state.hyperparams["weight_decay"][...]) == 0.5
    assert "mask" not in optimizer.opt_state.hyperparams
