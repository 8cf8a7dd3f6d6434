"""Orbax checkpoints of AAdam's state resume bit for bit in a fresh process.

Also Cautious AAdamW's: its mask keeps no state, so its checkpoint is AAdamW's
state inside the chain, and a resumed run must retrace the uninterrupted one.
"""

import functools
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import aadam_optax

TOTAL_STEPS = 40
SAVE_AT = 17


def make_optimizer(name="aadam"):
    # A chain, so the AAdam state sits inside a nested tuple as in real use.
    if name == "cautious_aadamw":
        inner = aadam_optax.cautious_aadamw(0.03, weight_decay=1e-3)
    else:
        inner = aadam_optax.aadam(0.03)
    return optax.chain(optax.clip_by_global_norm(5.0), inner)


def init_params():
    key1, key2 = jax.random.split(jax.random.key(0))
    return {"w": jax.random.normal(key1, (6, 3)), "b": jax.random.normal(key2, (3,))}


def batch(step):
    # The batch depends on the step only, so a resumed run sees the same data.
    key = jax.random.fold_in(jax.random.key(1), step)
    x = jax.random.normal(key, (16, 6))
    return x, jnp.sin(x[:, :3]) + 0.1 * x[:, 3:]


def loss_fn(params, x, y):
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)


@functools.cache
def optimizer_and_step(name="aadam"):
    tx = make_optimizer(name)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, train_step


def train(params, opt_state, steps, name="aadam"):
    train_step = optimizer_and_step(name)[1]
    losses = []
    for step in steps:
        params, opt_state, loss = train_step(params, opt_state, *batch(step))
        losses.append(np.asarray(loss))
    return params, opt_state, np.asarray(losses)


def abstract_target(name="aadam"):
    params = init_params()
    fresh = {"params": params, "opt_state": optimizer_and_step(name)[0].init(params)}
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh)


def resume(directory: str, out: str, name: str = "aadam") -> None:
    """Runs in the fresh process: restore, record dtypes, train to the end."""
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
        restored = manager.restore(
            step, args=ocp.args.StandardRestore(abstract_target(name))
        )
    aadam_state = restored["opt_state"][1][0]
    restored_leaves = jax.tree.leaves(restored)
    params, _, losses = train(
        restored["params"], restored["opt_state"], range(step, TOTAL_STEPS), name
    )
    np.savez(
        pathlib.Path(out) / "resumed.npz",
        losses=losses,
        **{f"param_{i}": leaf for i, leaf in enumerate(jax.tree.leaves(params))},
        **{f"restored_{i}": leaf for i, leaf in enumerate(restored_leaves)},
    )
    info = {
        "step": int(step),
        "state_type": type(aadam_state).__name__,
        "count": int(aadam_state.count),
        "count_dtype": str(aadam_state.count.dtype),
        "prev_grad_sign_dtypes": [
            str(leaf.dtype) for leaf in jax.tree.leaves(aadam_state.prev_grad_sign)
        ],
        "restored_dtypes": [str(leaf.dtype) for leaf in restored_leaves],
    }
    (pathlib.Path(out) / "resumed.json").write_text(json.dumps(info))


@pytest.mark.parametrize("name", ["aadam", "cautious_aadamw"])
def test_resume_in_a_fresh_process_is_bitwise_identical(tmp_path, name):
    tx = optimizer_and_step(name)[0]
    params = init_params()
    reference_params, _, reference_losses = train(
        params, tx.init(params), range(TOTAL_STEPS), name
    )

    params, opt_state, first_losses = train(
        params, tx.init(params), range(SAVE_AT), name
    )
    saved = {"params": params, "opt_state": opt_state}
    directory = (tmp_path / "checkpoints").resolve()
    with ocp.CheckpointManager(directory) as manager:
        manager.save(SAVE_AT, args=ocp.args.StandardSave(saved))
        manager.wait_until_finished()

    program = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_orbax; "
        "test_orbax.resume(sys.argv[2], sys.argv[3], sys.argv[4])"
    )
    tests_dir = str(pathlib.Path(__file__).resolve().parent)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            program,
            tests_dir,
            str(directory),
            str(tmp_path),
            name,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "resumed.json").read_text())
    resumed = np.load(tmp_path / "resumed.npz")

    # The state came back as saved: same structure type, values and dtypes.
    assert info["step"] == SAVE_AT
    assert info["state_type"] == "ScaleByAAdamState"
    assert info["count"] == SAVE_AT
    assert info["count_dtype"] == "int32"
    assert info["prev_grad_sign_dtypes"] == ["int8", "int8"]
    saved_leaves = jax.tree.leaves(saved)
    assert info["restored_dtypes"] == [str(leaf.dtype) for leaf in saved_leaves]
    for i, leaf in enumerate(saved_leaves):
        np.testing.assert_array_equal(resumed[f"restored_{i}"], leaf)
        assert resumed[f"restored_{i}"].dtype == leaf.dtype

    # ...and training from it retraces the uninterrupted run bit for bit.
    losses = np.concatenate([first_losses, resumed["losses"]])
    np.testing.assert_array_equal(losses, reference_losses)
    for i, leaf in enumerate(jax.tree.leaves(reference_params)):
        np.testing.assert_array_equal(resumed[f"param_{i}"], leaf)
    # The run did train (not a trivially constant trajectory).
    assert reference_losses[-1] < reference_losses[0]
    if name == "cautious_aadamw":
        # The checkpoint's layout is AAdamW's: either restores into the other.
        aadamw = optax.chain(
            optax.clip_by_global_norm(5.0), aadam_optax.aadamw(0.03, weight_decay=1e-3)
        )
        assert jax.tree.structure(opt_state) == jax.tree.structure(
            aadamw.init(init_params())
        )
