"""`state_shardings`: a jitted init and an Orbax restore keep the params' layout.

The mesh checks need 8 simulated CPU devices, which `XLA_FLAGS` must set before
JAX starts, so they run in one subprocess (this pytest process keeps its single
device) that raises on the first failed check. The 2-process case is in
tests/test_multihost.py (examples/multihost_train.py restores its sharded state
with this helper, in both processes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aadam_optax

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding, PartitionSpec as P

    import aadam_optax as ao

    assert jax.device_count() == 8, jax.devices()
    AUTO = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=AUTO)
    rng = np.random.default_rng(0)
    SPECS = {
        "both": P("data", "model"),
        "rows": P("data"),
        "columns": P(None, "model"),
        "replicated": P(),
    }
    SHAPES = {"both": (8, 4), "rows": (8,), "columns": (3, 6), "replicated": (5,)}
    # Nested, with a key ("rows") that is also a leaf at the top: the state leaf
    # mu['inner']['rows'] must follow params['inner']['rows'], not params['rows'].
    VALUES = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    VALUES["inner"] = {"rows": rng.standard_normal(8).astype(np.float32)}
    SPECS["inner"] = {"rows": P("model")}
    params = jax.tree.map(
        lambda v, s: jax.device_put(v, NamedSharding(mesh, s)), VALUES, SPECS
    )
    replicated = NamedSharding(mesh, P())

    OPTIMIZERS = {
        "aadam_sign_change": ao.aadam(0.05, variant="sign_change"),
        "aadam_magnitude": ao.aadam(0.05, variant="magnitude"),
        "aadamw": ao.aadamw(0.05, weight_decay=0.1),
        "aamsgrad": ao.aamsgrad(0.05),
        "aadamax": ao.aadamax(0.05),
        "accelerate_adam": optax.chain(
            ao.accelerate(optax.scale_by_adam()), optax.scale_by_learning_rate(0.05)
        ),
        "injected_aadam": optax.inject_hyperparams(ao.aadam)(learning_rate=0.05),
        "multi_steps_aadam": optax.MultiSteps(ao.aadam(0.05), every_k_schedule=2),
        "optax_adam": optax.adam(0.05),
    }

    def expected_shardings(opt):
        # Independently of the helper: optax.tree_map_params finds the copies of
        # the params tree in the state by running init on a placeholder.
        return optax.tree_map_params(
            opt,
            lambda _, param: param.sharding,
            jax.eval_shape(opt.init, params),
            params,
            transform_non_params=lambda _: replicated,
        )

    def check_layout(name, state, expected):
        leaves = jax.tree_util.tree_leaves_with_path(state)
        wanted = jax.tree.leaves(expected)
        assert len(leaves) == len(wanted), name
        sharded = 0
        for (path, leaf), sharding in zip(leaves, wanted):
            where = f"{name}{jax.tree_util.keystr(path)}"
            assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (
                f"{where}: {leaf.sharding} is not {sharding}"
            )
            # Scalars (counts, hyperparameters) sit on every device of the mesh.
            if leaf.ndim == 0:
                assert leaf.sharding.device_set == set(mesh.devices.flat), where
            sharded += not leaf.sharding.is_fully_replicated
        return sharded

    def step(opt):
        def loss(p):
            return sum(jnp.sum(jnp.sin(3.0 * x) + x**2) for x in jax.tree.leaves(p))

        @jax.jit
        def apply(p, state):
            updates, state = opt.update(jax.grad(loss)(p), state, p)
            return optax.apply_updates(p, updates), state

        return apply

    for name, opt in OPTIMIZERS.items():
        shardings = ao.state_shardings(opt, params)
        state = jax.jit(opt.init, out_shardings=shardings)(params)
        # Every param-shaped leaf but those of the two replicated params.
        sharded = check_layout(name, state, expected_shardings(opt))
        assert sharded >= 2 * 4, (name, sharded)
        eager = opt.init(params)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(eager), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b)), name
        # Abstract params (ShapeDtypeStruct with a sharding) give the same.
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
        assert ao.state_shardings(opt, abstract) == shardings, name

    # On a mesh with Explicit axes (jax.make_mesh's default) too, with no
    # jax.set_mesh around the jitted init.
    explicit_mesh = jax.make_mesh((4, 2), ("data", "model"))
    explicit = jax.tree.map(
        lambda v, s: jax.device_put(v, NamedSharding(explicit_mesh, s)), VALUES, SPECS
    )
    opt = OPTIMIZERS["aadam_sign_change"]
    state = jax.jit(opt.init, out_shardings=ao.state_shardings(opt, explicit))(explicit)
    for (path, leaf), expected in zip(
        jax.tree_util.tree_leaves_with_path(state),
        jax.tree.leaves(expected_shardings(opt)),
        strict=True,
    ):
        assert leaf.sharding.mesh == explicit_mesh, path
        assert leaf.sharding.spec == expected.spec, (path, leaf.sharding, expected)

    # Adafactor keeps row and column statistics of a matrix, whose shapes are
    # not the param's: those are replicated.
    opt = optax.adafactor(0.05, min_dim_size_to_factor=2)
    abstract = jax.eval_shape(opt.init, params)
    factored = []

    def expected(leaf, param):
        if leaf.shape == param.shape:
            return param.sharding
        factored.append(leaf.shape)
        return replicated

    state = jax.jit(opt.init, out_shardings=ao.state_shardings(opt, params))(params)
    check_layout(
        "adafactor",
        state,
        optax.tree_map_params(
            opt, expected, abstract, params, transform_non_params=lambda _: replicated
        ),
    )
    assert (4,) in factored and (8,) in factored, factored  # "both": 8 x 4

    # Orbax: save a trained state, restore it into a target built with the
    # helper, in a fresh manager, and train on. The restored arrays land on the
    # target's shardings and hold the saved bits.
    opt = ao.aadamw(0.05, weight_decay=0.1)
    shardings = ao.state_shardings(opt, params)
    init = jax.jit(opt.init, out_shardings=shardings)
    trained_params, state = step(opt)(*step(opt)(params, init(params)))
    directory = sys.argv[1]
    with ocp.CheckpointManager(directory) as manager:
        manager.save(2, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    with ocp.CheckpointManager(directory) as manager:
        target = jax.eval_shape(init, params)
        restored = manager.restore(2, args=ocp.args.StandardRestore(target))
    check_layout("restored", restored, expected_shardings(opt))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # A step keeps the layout (tests/test_sharding.py checks every optimizer).
    _, stepped = step(opt)(trained_params, restored)
    check_layout("a step after the restore", stepped, expected_shardings(opt))

    # Params on two meshes, or not placed at all, are refused by name.
    other = jax.make_mesh((2, 4), ("data", "model"), axis_types=AUTO)
    elsewhere = NamedSharding(other, P())
    mixed = dict(params, replicated=jax.device_put(VALUES["replicated"], elsewhere))
    unplaced = {"w": jax.ShapeDtypeStruct(VALUES["rows"].shape, VALUES["rows"].dtype)}
    for bad, message in ((mixed, "one common mesh"), (unplaced, "params['w']")):
        try:
            ao.state_shardings(opt, bad)
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"no error for {message}")
    print("OK")
    """
)


def test_state_shardings_on_an_8_device_mesh(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "checkpoints")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.strip().endswith("OK")


def test_single_device_params_keep_their_device():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    shardings = aadam_optax.state_shardings(aadam_optax.aadam(1e-3), params)
    device = params["w"].sharding
    assert all(s == device for s in jax.tree.leaves(shardings))


def test_abstract_params_without_sharding_are_refused_by_name():
    params = {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}
    with pytest.raises(ValueError, match=r"params\['w'\]"):
        aadam_optax.state_shardings(optax.adam(1e-3), params)


@pytest.mark.parametrize(
    "params",
    [{}, {"s": 2.0}, {"s": 2.0, "w": jnp.ones(3)}, {"n": np.zeros(3)}],
    ids=["empty", "float", "float-and-array", "numpy"],
)
def test_params_init_accepts_get_shardings_init_can_use(params):
    """Wherever init works, so does state_shardings: host values (a Python
    float, a NumPy array) and empty params get the default device, where
    init puts their state."""
    tx = aadam_optax.aadamw(1e-3)
    shardings = aadam_optax.state_shardings(tx, params)
    state = jax.jit(tx.init, out_shardings=shardings)(params)
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_equivalent_to(default, leaf.ndim)


def test_a_non_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer"):
        aadam_optax.state_shardings(3, {"w": jnp.zeros(3)})


def test_guide_orbax_recipe_restores_onto_the_target():
    guide = (REPO / "docs" / "guide.md").read_text()
    (block,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", guide, flags=re.DOTALL)
        if "state_shardings" in block
    ]
    namespace: dict = {}
    exec(block, namespace)  # noqa: S102 - the guide's own recipe
    restored, saved = namespace["restored"], namespace["state"]
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True):
        assert a.dtype == b.dtype and a.sharding == b.sharding
        assert np.array_equal(np.asarray(a), np.asarray(b))
