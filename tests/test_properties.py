"""Hypothesis properties: random pytrees, dtypes, hyperparameters and gradients.

The transformations run eagerly: every example has a new tree structure, so a
`jax.jit` would compile once per example, while eager ops reuse their compiled
kernels across examples (shapes come from a small pool for that reason).
"""

from __future__ import annotations

import functools
from typing import Any

import cautious_reference as cref
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

import aadam_optax

SHAPES = [(), (0,), (3,), (2, 3), (2, 0), (1, 1, 2)]


@st.composite
def trees(draw: st.DrawFn) -> Any:
    """A dict, list, tuple or nesting of them, holding 1-4 leaf shapes."""
    shapes = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=4))
    kind = draw(st.sampled_from(["dict", "list", "tuple", "nested"]))
    if kind == "dict":
        return {f"k{i}": s for i, s in enumerate(shapes)}
    if kind == "list":
        return list(shapes)
    if kind == "tuple":
        return tuple(shapes)
    return {"first": [shapes[0]], "rest": tuple(shapes[1:])}


def is_shape(x: Any) -> bool:
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def gradient_sequence(
    shape_tree: Any, steps: int, seed: int, dtype: Any, well_scaled: bool
) -> list[Any]:
    """Random gradients with exact zeros and sign flips, already in `dtype`."""
    rng = np.random.default_rng(seed)

    def leaf(shape: tuple) -> np.ndarray:
        if well_scaled:
            values = rng.choice([-4.0, -1.0, -0.5, 0.5, 1.0, 2.0], size=shape)
        else:
            values = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 2, size=shape)
        values = np.where(rng.random(shape) < 0.25, 0.0, values)
        return jnp.asarray(values, dtype)

    return [jax.tree.map(leaf, shape_tree, is_leaf=is_shape) for _ in range(steps)]


def make_transform(family: str, hyper: dict, variant: str) -> Any:
    if family == "adamax":
        return aadam_optax.scale_by_aadamax(
            hyper["b1"], hyper["b2"], hyper["eps"], variant=variant
        )
    if family == "amsgrad":
        return aadam_optax.scale_by_aamsgrad(**hyper, variant=variant)
    return aadam_optax.scale_by_aadam(
        **hyper, variant=variant, bias_correction=family == "adam"
    )


def reference_config(family: str, hyper: dict, variant: str) -> ref.Config:
    return ref.Config(
        "adam" if family == "adam_no_bias_correction" else family,
        hyper["b1"],
        hyper["b2"],
        hyper["eps"],
        hyper["eps_root"],
        variant,
        bias_correction=family != "adam_no_bias_correction",
    )


def flat(tree: Any) -> np.ndarray:
    leaves = jax.tree.leaves(tree)
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in leaves])


def check_state(state: Any, initial: Any) -> None:
    """Dtypes and shapes never change; signs are -1, 0 or +1."""
    for before, after in zip(
        jax.tree.leaves(initial), jax.tree.leaves(state), strict=True
    ):
        assert before.dtype == after.dtype
        assert before.shape == after.shape
    for sign in jax.tree.leaves(state.prev_grad_sign):
        assert sign.dtype == jnp.int8
        assert set(np.unique(np.asarray(sign))) <= {-1, 0, 1}
    assert state.count.dtype == jnp.int32


hyperparameters = st.fixed_dictionaries(
    {
        # b1 = 0 is rejected. Below 1e-3 a decay rate only reaches the
        # subnormals, which XLA:CPU flushes to zero and NumPy keeps, or makes v
        # underflow to 0 under a nonzero m; b2 = 0 keeps that case, on purpose.
        "b1": st.floats(1e-3, 0.999),
        "b2": st.one_of(st.just(0.0), st.floats(1e-3, 0.999)),
        "eps": st.sampled_from([0.0, 1e-8, 1e-3]),
        "eps_root": st.sampled_from([0.0, 1e-10, 1e-4]),
    }
)
families = st.sampled_from(["adam", "adam_no_bias_correction", "adamax", "amsgrad"])


@given(
    shape_tree=trees(),
    dtype_name=st.sampled_from(["float64", "float32", "bfloat16", "float16"]),
    hyper=hyperparameters,
    variant=st.sampled_from(aadam_optax.VARIANTS),
    family=families,
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_trees_dtypes_and_hyperparameters(
    shape_tree: Any,
    dtype_name: str,
    hyper: dict,
    variant: str,
    family: str,
    steps: int,
    seed: int,
) -> None:
    """State dtypes/shapes never change, signs are in {-1, 0, 1}, updates keep
    the gradients' dtype and structure; float64 matches the reference to 1e-9
    and float32 to 1e-4. bfloat16/float16 (which cannot hold eps = 1e-8 or
    b2 = 0.999) are checked for dtypes and finiteness only, with well-scaled
    gradients and eps = 1e-3."""
    low_precision = dtype_name in ("bfloat16", "float16")
    if low_precision:
        hyper = {**hyper, "eps": 1e-3, "eps_root": 0.0}
    dtype = jnp.dtype(dtype_name)
    with jax.enable_x64(dtype_name == "float64"):
        grads = gradient_sequence(shape_tree, steps, seed, dtype, low_precision)
        transform = make_transform(family, hyper, variant)
        initial = transform.init(grads[0])
        state, updates = initial, []
        for grad in grads:
            update, state = transform.update(grad, state)
            updates.append(update)
            check_state(state, initial)
            for u, g in zip(
                jax.tree.leaves(update), jax.tree.leaves(grad), strict=True
            ):
                assert u.dtype == dtype and u.shape == g.shape
        assert jax.tree.structure(updates[-1]) == jax.tree.structure(grads[0])
        actual = np.stack([flat(u) for u in updates])
    np.testing.assert_array_equal(flat(state.prev_grad_sign), np.sign(flat(grads[-1])))
    # AAdaMax's v has no eps_root under it, so only its eps keeps it off zero.
    no_eps_root = family == "adamax" or hyper["eps_root"] == 0
    degenerate = hyper["b2"] == 0 and hyper["eps"] == 0 and no_eps_root
    if not degenerate:
        # Only with b2 = 0 and no eps can v be 0 under a nonzero m (x / 0 = inf).
        assert np.all(np.isfinite(actual))
    if low_precision:
        return
    history = ref.run_directions(
        np.stack([flat(g) for g in grads]), reference_config(family, hyper, variant)
    )
    finite = np.where(np.isfinite(history.directions), history.directions, 0.0)
    scale = np.max(np.abs(finite), initial=0.0)
    double = dtype_name == "float64"
    rtol, atol = (1e-9, 1e-12 * scale) if double else (1e-4, 1e-5 * scale)
    np.testing.assert_allclose(actual, history.accelerated, rtol=rtol, atol=atol)


# Fewer examples than the profile's: each runs two transformations eagerly.
@settings(max_examples=12)
@given(
    shape_tree=trees(),
    dtype_name=st.sampled_from(["float64", "float32", "bfloat16", "float16"]),
    hyper=hyperparameters,
    variant=st.sampled_from(aadam_optax.VARIANTS),
    family=families,
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    cautious_eps=st.sampled_from([0.0, 1e-8, 1.0]),
)
def test_cautious_mask_keeps_the_inner_state_and_masks_each_leaf(
    shape_tree: Any,
    dtype_name: str,
    hyper: dict,
    variant: str,
    family: str,
    steps: int,
    seed: int,
    cautious_eps: float,
) -> None:
    """`scale_by_cautious(t)` keeps `t`'s state bit for bit (the mask has none)
    and returns, leaf by leaf, the reference mask of `t`'s own update, rounded
    to its dtype: the count runs over one leaf, a scalar leaf is a leaf of one,
    an empty leaf stays empty, and nothing kept gives zeros (also with eps =
    0). The dtype and structure are the gradients'; no NaN where `t` has none.

    The mask reads `t`'s update, not the reference's, so that a sign rounded
    differently from float64 cannot make the comparison flaky; the directions
    themselves are checked against the reference in the test above.
    """
    low_precision = dtype_name in ("bfloat16", "float16")
    if low_precision:
        hyper = {**hyper, "eps": 1e-3, "eps_root": 0.0}
    dtype = jnp.dtype(dtype_name)
    # The mask's scale is computed in at least float32, then rounded.
    rtol = 4 * float(jnp.finfo(dtype).eps)
    atol = 4 * float(jnp.finfo(dtype).smallest_normal)
    with jax.enable_x64(dtype_name == "float64"):
        grads = gradient_sequence(shape_tree, steps, seed, dtype, low_precision)
        inner = make_transform(family, hyper, variant)
        masked = aadam_optax.scale_by_cautious(inner, eps=cautious_eps)
        state = inner.init(grads[0])
        masked_state = masked.init(grads[0])
        for grad in grads:
            update, state = inner.update(grad, state)
            masked_update, masked_state = masked.update(grad, masked_state)
            assert jax.tree.structure(masked_state) == jax.tree.structure(state)
            for mine, theirs in zip(
                jax.tree.leaves(masked_state), jax.tree.leaves(state), strict=True
            ):
                assert mine.dtype == theirs.dtype
                np.testing.assert_array_equal(mine, theirs)
            assert jax.tree.structure(masked_update) == jax.tree.structure(grad)
            for m, u, g in zip(
                jax.tree.leaves(masked_update),
                jax.tree.leaves(update),
                jax.tree.leaves(grad),
                strict=True,
            ):
                assert m.dtype == dtype and m.shape == g.shape
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    expected = cref.mask(
                        np.asarray(u, np.float64),
                        np.asarray(g, np.float64),
                        cautious_eps,
                    )
                    expected = np.asarray(expected.astype(dtype), np.float64)
                actual = np.asarray(m, np.float64)
                np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
                finite = np.isfinite(np.asarray(u, np.float64))
                assert np.all(np.isfinite(actual[finite]))


def test_ten_thousand_steps_match_reference() -> None:
    """aadam (sign_change) in float64 for 10,000 steps, one compiled scan.

    The gradients are a fixed stream, not fed back from the params, so the
    comparison measures the optimizer's arithmetic over a long run (bias
    corrections that reach 1, int32 count) without chaotic amplification. The
    stream is Reddi et al.'s online problem (3 every third step, else -1), a
    noisy signal, a slowly drifting sinusoid and a sparse component.
    """
    steps = 10_000
    n = np.arange(1, steps + 1)
    rng = np.random.default_rng(11)
    grads = np.stack(
        [
            np.where(n % 3 == 1, 3.0, -1.0),
            rng.normal(size=steps) + 0.1,
            np.sin(n / 50.0) * (1.0 + n / steps),
            np.where(rng.random(steps) < 0.7, 0.0, rng.normal(size=steps)),
        ],
        axis=1,
    )
    with jax.enable_x64(True):
        optimizer = aadam_optax.aadam(0.01, variant="sign_change")

        @jax.jit
        def run(grads: jax.Array) -> tuple[jax.Array, Any]:
            def body(state: Any, grad: jax.Array) -> tuple[Any, jax.Array]:
                update, state = optimizer.update(grad, state)
                return state, update

            state, updates = jax.lax.scan(body, optimizer.init(grads[0]), grads)
            return updates, state

        updates, state = run(jnp.asarray(grads))
        updates = np.asarray(updates)
    history = ref.run_directions(grads, ref.Config())
    expected = -0.01 * history.accelerated
    np.testing.assert_allclose(
        updates, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max()
    )
    assert int(state[0].count) == steps
    np.testing.assert_allclose(state[0].mu, history.state.mu, rtol=1e-10, atol=1e-15)


# --- the steady state: AAdam takes its base direction's step ----------------
#
# With a constant direction `a` and gradients of constant sign, `c_n = 1` from
# step 2 on (`c_1 = 0`), so `u_1 = b1 a` and `u_n - a = (1 - b1)(u_{n-1} - a)`:
# `u_n - a = (1 - b1)^(n - 1) (b1 - 1) a`, i.e. `|u_n - a| = (1 - b1)^n |a|` for
# every n >= 1, and `u_n -> a`. ("sign" has `c_n = sign(g_n)`, which is 1 only
# for positive gradients.)

CONSTANT_STEPS = 30


@functools.partial(jax.jit, static_argnames="variant")
def accelerated_constant_direction(
    b1: jax.Array, grad: jax.Array, variant: str
) -> jax.Array:
    """`u_1 .. u_N` of `accelerate(identity)`: the direction is the gradient."""
    transform = aadam_optax.accelerate(optax.identity(), b1, variant=variant)

    def body(state: Any, _: None) -> tuple[Any, jax.Array]:
        direction, state = transform.update(grad, state)
        return state, direction

    return jax.lax.scan(body, transform.init(grad), length=CONSTANT_STEPS)[1]


@jax.jit
def aadam_and_adam_directions(
    b1: jax.Array, b2: jax.Array, grad: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`u_n` of scale_by_aadam and `a_n` of optax.scale_by_adam, constant `grad`."""
    transforms = (
        aadam_optax.scale_by_aadam(b1, b2),
        optax.scale_by_adam(b1, b2),
    )

    def directions(transform: Any) -> jax.Array:
        def body(state: Any, _: None) -> tuple[Any, jax.Array]:
            direction, state = transform.update(grad, state)
            return state, direction

        return jax.lax.scan(body, transform.init(grad), length=CONSTANT_STEPS)[1]

    return directions(transforms[0]), directions(transforms[1])


constant_gradients = st.lists(
    st.floats(1e-3, 1e3).flatmap(lambda x: st.sampled_from([x, -x])),
    min_size=4,
    max_size=4,
)


@given(
    b1=st.floats(0.01, 0.99),
    grad=constant_gradients,
    variant=st.sampled_from(aadam_optax.VARIANTS),
)
def test_constant_direction_converges_geometrically_to_itself(
    b1: float, grad: list[float], variant: str
) -> None:
    grad = np.abs(grad) if variant == "sign" else np.asarray(grad)
    with jax.enable_x64(True):
        updates = np.asarray(
            accelerated_constant_direction(jnp.float64(b1), jnp.asarray(grad), variant)
        )
    n = np.arange(1, CONSTANT_STEPS + 1)[:, None]
    np.testing.assert_allclose(
        np.abs(updates - grad),
        (1 - b1) ** n * np.abs(grad),
        rtol=1e-9,
        atol=1e-14 * np.abs(grad).max(),
    )
    assert np.all(np.sign(updates) == np.sign(grad))


@given(b1=st.floats(0.01, 0.99), b2=st.floats(0.5, 0.999), grad=constant_gradients)
def test_aadam_takes_adams_step_in_steady_state(
    b1: float, b2: float, grad: list[float]
) -> None:
    """Adam's direction for a constant gradient is constant (`g / (|g| + eps)`),
    so AAdam's is Adam's up to a transient `(1 - b1)^n |a|`."""
    with jax.enable_x64(True):
        accelerated, adam = aadam_and_adam_directions(
            jnp.float64(b1), jnp.float64(b2), jnp.asarray(grad)
        )
    accelerated, adam = np.asarray(accelerated), np.asarray(adam)
    n = np.arange(1, CONSTANT_STEPS + 1)[:, None]
    np.testing.assert_allclose(
        np.abs(accelerated - adam), (1 - b1) ** n * np.abs(adam), rtol=1e-7, atol=1e-14
    )
