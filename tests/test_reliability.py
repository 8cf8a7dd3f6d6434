"""Non-finite gradients and extreme magnitudes.

Two questions a user asks before a long training run:

* What does a NaN or Inf gradient do? Without protection it poisons the
  element it lands on, in the params and in every moment, for good; wrapped in
  `optax.apply_if_finite` the step is skipped and nothing changes, bit for bit.
* Do zero, tiny or huge gradients, or low-precision params, ever produce NaN or
  Inf over a long run? They do not, as long as the gradient's square is finite
  in the params' dtype (the second moment stores `|g|^2`, as in optax.adam), and
  in float16 as long as `(1 - b2) |g|^2` does not underflow. The magnitudes are
  chosen per dtype below, with the reason.

Long runs use `jax.lax.scan` so that each compiles once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cautious_reference as cref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aadam_optax as ao

LEARNING_RATE = 1e-3
LONG_RUN = 10_000

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "aadam_sign_change": lambda: ao.aadam(LEARNING_RATE, variant="sign_change"),
    "aadam_sign": lambda: ao.aadam(LEARNING_RATE, variant="sign"),
    "aadam_magnitude": lambda: ao.aadam(LEARNING_RATE, variant="magnitude"),
    "aadamax": lambda: ao.aadamax(LEARNING_RATE),
    "aamsgrad": lambda: ao.aamsgrad(LEARNING_RATE),
}


def _params() -> dict[str, jax.Array]:
    return {
        "w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(3, 2),
        "b": jnp.array([0.5, -0.25], jnp.float32),
    }


def _grads(step: int) -> dict[str, np.ndarray]:
    """A finite gradient that changes sign from step to step (NumPy, so that
    building it compiles nothing)."""
    rng = np.random.default_rng(step)
    return {
        "w": rng.standard_normal((3, 2)).astype(np.float32),
        "b": rng.standard_normal(2).astype(np.float32),
    }


def _poisoned(step: int, value: float) -> dict[str, np.ndarray]:
    """`_grads(step)` with one element of `w` replaced by `value`."""
    grads = _grads(step)
    grads["w"][1, 0] = value
    return grads


def _make_step(opt: optax.GradientTransformation) -> Callable[..., Any]:
    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def _assert_trees_bitwise_equal(actual: Any, expected: Any) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype
        assert np.array_equal(a, e), (a, e)


# --------------------------------------------------------------------------
# Non-finite gradients with optax.apply_if_finite.


# The wrapper does not look inside the state, so one variant of AAdam stands for
# all three; the other state layouts are covered.
@pytest.mark.parametrize(
    "make",
    [
        OPTIMIZERS["aadam_sign_change"],
        OPTIMIZERS["aadamax"],
        OPTIMIZERS["aamsgrad"],
        lambda: ao.aadamw(LEARNING_RATE, weight_decay=0.1),
        # The mask keeps no state: the skip holds it as it holds the rest.
        lambda: ao.cautious_adamw(LEARNING_RATE, weight_decay=0.1),
        lambda: ao.cautious_aadamw(LEARNING_RATE, weight_decay=0.1),
    ],
    ids=["aadam", "aadamax", "aamsgrad", "aadamw", "cautious_adamw", "cautious_aadamw"],
)
def test_apply_if_finite_skips_nan_and_inf_steps_bitwise(make: Callable) -> None:
    max_errors = 3
    opt = optax.apply_if_finite(make(), max_consecutive_errors=max_errors)
    step = _make_step(opt)
    params, state = _params(), opt.init(_params())
    for n in range(4):
        params, state = step(params, state, _grads(n))

    # The run as if the bad steps never happened.
    clean_params, clean_state = step(params, state, _grads(4))

    for n_bad, value in enumerate([np.nan, np.inf, -np.inf], start=1):
        new_params, new_state = step(params, state, _poisoned(100 + n_bad, value))
        _assert_trees_bitwise_equal(new_params, params)
        _assert_trees_bitwise_equal(new_state.inner_state, state.inner_state)
        assert int(new_state.notfinite_count) == n_bad
        assert not bool(new_state.last_finite)
        params, state = new_params, new_state

    # The next finite gradient resets the count and takes exactly the step the
    # clean run took: the skipped steps left no trace.
    params, state = step(params, state, _grads(4))
    _assert_trees_bitwise_equal(params, clean_params)
    _assert_trees_bitwise_equal(state.inner_state, clean_state.inner_state)
    assert int(state.notfinite_count) == 0
    assert int(state.total_notfinite) == 3


def test_apply_if_finite_lets_the_update_through_after_max_consecutive_errors() -> None:
    """optax's contract: with `max_consecutive_errors=k` the first k consecutive
    non-finite steps are skipped and the (k+1)-th is applied, NaN included."""
    max_errors = 2
    opt = optax.apply_if_finite(ao.aadam(LEARNING_RATE), max_errors)
    step = _make_step(opt)
    params, state = _params(), opt.init(_params())
    params, state = step(params, state, _grads(0))
    before_params, before_inner = params, state.inner_state

    for n in range(max_errors):
        params, state = step(params, state, _poisoned(n, np.nan))
        _assert_trees_bitwise_equal(params, before_params)
        _assert_trees_bitwise_equal(state.inner_state, before_inner)

    params, state = step(params, state, _poisoned(max_errors, np.nan))
    assert int(state.notfinite_count) == max_errors + 1
    assert np.isnan(params["w"][1, 0])
    assert np.isnan(state.inner_state[0].mu["w"][1, 0])


# --------------------------------------------------------------------------
# Non-finite gradients without protection: what users should expect.


# Not the cautious optimizers: a non-finite step is kept by the mask, which
# changes the leaf's kept count and so the scale of every other element of
# that leaf. The poison stays in its element; the other steps change size.
@pytest.mark.parametrize("name", ["aadam_sign_change", "aadamax", "aamsgrad"])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_unprotected_nonfinite_gradient_poisons_its_element_for_good(
    name: str, bad: float
) -> None:
    """A NaN, or an Inf (Adam's `m / sqrt(v)` is then `inf / inf`), turns the
    param it reaches into NaN; the optimizer is element-wise, so every other
    element takes the step it would have taken anyway. The moments of the hit
    element stay non-finite forever, so later finite gradients cannot heal it:
    wrap the optimizer in `optax.apply_if_finite`."""
    opt = OPTIMIZERS[name]()
    step = _make_step(opt)
    params, state = _params(), opt.init(_params())
    params, state = step(params, state, _grads(0))

    hit_params, hit_state = step(params, state, _poisoned(1, bad))
    clean_params, clean_state = step(params, state, _poisoned(1, 0.3))
    assert np.isnan(hit_params["w"][1, 0])
    assert np.isnan(hit_state[0].prev_update["w"][1, 0])
    assert not np.isfinite(hit_state[0].mu["w"][1, 0])
    mask = np.ones((3, 2), bool)
    mask[1, 0] = False
    np.testing.assert_array_equal(
        np.asarray(hit_params["w"])[mask], np.asarray(clean_params["w"])[mask]
    )
    np.testing.assert_array_equal(hit_params["b"], clean_params["b"])
    # The int8 sign state stays a valid sign whatever the gradient was.
    assert set(np.unique(hit_state[0].prev_grad_sign["w"])) <= {-1, 0, 1}

    for n in range(2, 12):
        hit_params, hit_state = step(hit_params, hit_state, _grads(n))
        clean_params, clean_state = step(clean_params, clean_state, _grads(n))
    assert np.isnan(hit_params["w"][1, 0])
    assert not np.isfinite(hit_state[0].mu["w"][1, 0])
    np.testing.assert_array_equal(
        np.asarray(hit_params["w"])[mask], np.asarray(clean_params["w"])[mask]
    )
    assert int(hit_state[0].count) == 12


# --------------------------------------------------------------------------
# Extreme magnitudes over long runs.

# Magnitudes per dtype, chosen so that the gradient and its square are finite
# in the dtype (the second moment stores `|g|^2`; optax.adam does the same):
# * float32 and bfloat16 share an exponent range (max about 3.4e38), so the
#   largest decade with a finite square is 1e19; 1e-30 is representable and
#   default `eps = 1e-8` keeps the denominator away from zero.
# * float16 (max 65504, smallest normal 6.1e-5) rounds `eps = 1e-8` to 0, so
#   the denominator is `sqrt(v)` alone and `(1 - b2) |g|^2` must not underflow:
#   |g| >= 0.25. The top is 128 = sqrt(max) / 2, not 255: in float16 b2 = 0.999
#   rounds to 0.99902, which lifts the fixed point of `v` to 1.024 |g|^2, and
#   AMSGrad's bias-corrected `v / (1 - b2^n)` overshoots it through rounding; at
#   |g| = 255 `nu_max` overflows to inf (a zero step, as in float32 at 1e30).
# 1e30 itself is tested in float64 (below), and in float32 where its square
# overflows (the documented saturation test).
MAGNITUDES = {
    "float32": (1e-30, 1e19),
    "bfloat16": (1e-30, 1e19),
    "float16": (0.25, 128.0),
}
# Rows of each param: every row is an independent gradient stream, since the
# optimizer is element-wise.
CASES = (
    "zero",
    "tiny",
    "huge",
    "tiny_random_sign",
    "huge_random_sign",
    "tiny_then_huge_then_zero",
)
WIDTH = 4


def _stream(
    step: jax.Array, sign: jax.Array, tiny: float, huge: float, dtype: Any
) -> jax.Array:
    """The gradient of every case at `step`, shape `(len(CASES), WIDTH)`."""
    third = LONG_RUN // 3
    switching = jnp.where(step < third, tiny, jnp.where(step < 2 * third, huge, 0.0))
    rows = [
        jnp.zeros(WIDTH),
        jnp.full(WIDTH, tiny),
        jnp.full(WIDTH, huge),
        tiny * sign,
        huge * sign,
        switching * sign,
    ]
    return jnp.stack(rows).astype(dtype)


def _long_run(
    opt: optax.GradientTransformation,
    dtypes: dict[str, Any],
    magnitudes: dict[str, tuple[float, float]] = MAGNITUDES,
) -> Any:
    """Runs LONG_RUN steps; returns final params, state, last updates and
    whether every float leaf of params and state stayed finite at every step."""
    params = {
        name: jnp.ones((len(CASES), WIDTH), dtype) for name, dtype in dtypes.items()
    }

    def all_finite(tree: Any) -> jax.Array:
        flags = [
            jnp.all(jnp.isfinite(leaf))
            for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)
        ]
        return jnp.all(jnp.stack(flags))

    def body(carry: Any, xs: tuple[jax.Array, jax.Array]) -> tuple[Any, None]:
        params, state, _, finite = carry
        step, sign = xs
        grads = {
            name: _stream(step, sign, *magnitudes[name], dtype)
            for name, dtype in dtypes.items()
        }
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        finite = finite & all_finite((params, state, updates))
        return (params, state, updates, finite), None

    state = opt.init(params)
    init = (params, state, jax.tree.map(jnp.zeros_like, params), jnp.array(True))
    # Random signs drawn once, outside the loop: an in-loop PRNG would dominate
    # the compile time.
    signs = jax.random.rademacher(jax.random.key(1), (LONG_RUN, WIDTH), jnp.float32)
    run = jax.jit(lambda c, xs: jax.lax.scan(body, c, xs)[0])
    return run(init, (jnp.arange(LONG_RUN), signs))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_long_runs_at_extreme_magnitudes_stay_finite(name: str) -> None:
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
    params, state, updates, finite = _long_run(OPTIMIZERS[name](), dtypes)
    assert bool(finite), "a NaN or Inf appeared in params, state or updates"
    inner = state[0]
    assert int(inner.count) == LONG_RUN
    for dtype_name in dtypes:
        signs = np.asarray(inner.prev_grad_sign[dtype_name])
        assert set(np.unique(signs)) <= {-1, 0, 1}
        # A gradient that is always zero never moves a param (c_n = 0, a_n = 0).
        np.testing.assert_array_equal(
            np.asarray(params[dtype_name][CASES.index("zero")], np.float32), 1.0
        )

    # With a constant positive gradient every variant has c_n = +1, so `u_n`
    # converges to the fixed point `a` of Adam's direction, which for |g| >> eps
    # is mhat / sqrt(vhat) = 1 whatever the magnitude (scale invariance), and for
    # |g| << eps is g / eps (AdaMax: g / (|g| + eps)). Checked in float32, where
    # b1 and b2 are represented well enough for the fixed point to be exact.
    tiny, huge = MAGNITUDES["float32"]
    direction = np.asarray(inner.prev_update["float32"], np.float64)
    np.testing.assert_allclose(direction[CASES.index("huge")], 1.0, rtol=1e-3)
    np.testing.assert_allclose(direction[CASES.index("tiny")], tiny / 1e-8, rtol=1e-3)
    # The step the last update took is the learning rate times that direction.
    np.testing.assert_allclose(
        np.asarray(updates["float32"][CASES.index("huge")]),
        -LEARNING_RATE,
        rtol=1e-3,
    )
    # In the low-precision dtypes the fixed point is perturbed by rounding (in
    # bfloat16 b2 = 0.999 rounds to 1.0, as in optax.adam), but the step stays
    # of the learning rate's order.
    for dtype_name in ("bfloat16", "float16"):
        size = np.abs(np.asarray(inner.prev_update[dtype_name], np.float32))
        assert 0.5 < size[CASES.index("huge")].min()
        assert size[CASES.index("huge")].max() < 2.0


# The cautious optimizers, without decay (which moves a param whose gradient is
# 0). C-AdamW's direction is optax.scale_by_adam's, which is 0 / 0 = NaN for a
# gradient that has always been 0 once eps = 1e-8 rounds to 0, as it does in
# float16; the mask keeps NaN steps (they propagate, as without it), so in
# float16 C-AdamW stalls into NaN exactly as optax.adamw does: not run there.
CAUTIOUS_LONG_RUNS: dict[str, tuple[Callable[[], Any], tuple[Any, ...]]] = {
    "cautious_aadamw": (
        lambda: ao.cautious_aadamw(LEARNING_RATE, weight_decay=0.0),
        (jnp.float32, jnp.bfloat16, jnp.float16),
    ),
    "cautious_adamw": (
        lambda: ao.cautious_adamw(LEARNING_RATE, weight_decay=0.0),
        (jnp.float32, jnp.bfloat16),
    ),
}


@pytest.mark.parametrize("name", list(CAUTIOUS_LONG_RUNS))
def test_cautious_long_runs_at_extreme_magnitudes_stay_finite(name: str) -> None:
    """No NaN or Inf over a long run at extreme magnitudes; a zero gradient is
    never kept, so its param never moves; and after the run the last update
    is still the reference mask of the direction (C-AAdamW keeps its `u_n`,
    unmasked, in the state) read against the last gradient."""
    make, dtype_list = CAUTIOUS_LONG_RUNS[name]
    dtypes = {jnp.dtype(d).name: d for d in dtype_list}
    params, state, updates, finite = _long_run(make(), dtypes)
    assert bool(finite), "a NaN or Inf appeared in params, state or updates"
    assert int(state[0].count) == LONG_RUN
    for dtype_name in dtypes:
        np.testing.assert_array_equal(
            np.asarray(params[dtype_name][CASES.index("zero")], np.float32), 1.0
        )
    if name != "cautious_aadamw":
        return
    # The last gradient, as _long_run drew it.
    signs = jax.random.rademacher(jax.random.key(1), (LONG_RUN, WIDTH), jnp.float32)
    last = _stream(
        jnp.asarray(LONG_RUN - 1), signs[-1], *MAGNITUDES["float32"], jnp.float32
    )
    direction = np.asarray(state[0].prev_update["float32"], np.float64)
    expected = -LEARNING_RATE * cref.mask(direction, np.asarray(last, np.float64))
    np.testing.assert_allclose(
        np.asarray(updates["float32"], np.float64), expected, rtol=1e-6, atol=1e-37
    )
    # The zero row and the rows against their gradient are dropped, the rest
    # kept: the last step is masked, not all or nothing.
    dropped = np.count_nonzero(np.asarray(updates["float32"]) == 0)
    assert WIDTH <= dropped < len(CASES) * WIDTH


def test_float64_long_run_at_1e30_and_1e_minus_30() -> None:
    """1e30 and 1e-30 themselves, in float64, where their squares are finite."""
    with jax.enable_x64(True):
        params, state, _, finite = _long_run(
            ao.aadam(LEARNING_RATE),
            {"float64": jnp.float64},
            {"float64": (1e-30, 1e30)},
        )
        assert bool(finite)
        direction = np.asarray(state[0].prev_update["float64"])
        np.testing.assert_allclose(direction[CASES.index("huge")], 1.0, rtol=1e-6)
        np.testing.assert_allclose(
            direction[CASES.index("tiny")], 1e-30 / 1e-8, rtol=1e-6
        )


@pytest.mark.parametrize("name", ["aadam_sign_change", "aamsgrad"])
def test_float32_gradient_whose_square_overflows_saturates_to_a_zero_step(
    name: str,
) -> None:
    """|g| = 1e30 in float32: `|g|^2` overflows, so `nu` is inf and Adam's
    direction `mhat / sqrt(vhat)` is `finite / inf = 0`. The param does not move,
    but nothing becomes NaN: a silent stall that optax.adam shares. Scale such
    losses down, or train in float64 (or use AAdaMax, which stores |g|)."""
    opt = OPTIMIZERS[name]()
    step = _make_step(opt)
    params = {"w": jnp.ones(3, jnp.float32)}
    state = opt.init(params)
    grads = {"w": jnp.array([1e30, -1e30, 1.0], jnp.float32)}
    for _ in range(5):
        params, state = step(params, state, grads)
    inner = state[0]
    assert np.all(np.isinf(inner.nu["w"][:2]))
    assert np.all(np.isfinite(inner.mu["w"]))
    np.testing.assert_array_equal(inner.prev_update["w"][:2], 0.0)
    np.testing.assert_array_equal(params["w"][:2], 1.0)
    assert np.isfinite(params["w"][2]) and params["w"][2] < 1.0


def test_aadamax_handles_1e30_in_float32() -> None:
    """AdaMax's `v = max(b2 v, |g|)` never squares the gradient."""
    opt = ao.aadamax(LEARNING_RATE)
    step = _make_step(opt)
    params = {"w": jnp.ones(2, jnp.float32)}
    state = opt.init(params)
    for _ in range(20):
        params, state = step(params, state, {"w": jnp.array([1e30, -1e30])})
    assert np.all(np.isfinite(state[0].nu["w"]))
    np.testing.assert_allclose(np.abs(state[0].prev_update["w"]), 1.0, rtol=1e-3)


def test_float16_small_gradients_overflow_exactly_as_optax_adam_does() -> None:
    """A documented limitation shared with optax.adam, not hidden.

    In float16, eps=1e-8 rounds to 0 and (1 - b2) |g|^2 underflows for
    |g| < ~5e-3, so the first direction is m / 0 = inf. AAdam's first step is
    b1 times Adam's, so both overflow together; the README tells float16 users
    to keep float32 master params (or use bfloat16).
    """
    params = jnp.ones(3, jnp.float16)
    grads = jnp.full(3, 1e-3, jnp.float16)
    ours, _ = ao.aadam(LEARNING_RATE).update(
        grads, ao.aadam(LEARNING_RATE).init(params)
    )
    adam = optax.adam(LEARNING_RATE)
    theirs, _ = adam.update(grads, adam.init(params))
    assert np.all(np.isinf(np.asarray(theirs, np.float32)))
    assert np.all(np.isinf(np.asarray(ours, np.float32)))
    assert np.array_equal(np.sign(np.asarray(ours)), np.sign(np.asarray(theirs)))
    # At |g| = 0.25 the square is representable in float16 and the step is finite.
    grads = jnp.full(3, 0.25, jnp.float16)
    ours, _ = ao.aadam(LEARNING_RATE).update(
        grads, ao.aadam(LEARNING_RATE).init(params)
    )
    assert np.all(np.isfinite(np.asarray(ours, np.float32)))


# --------------------------------------------------------------------------
# eps = eps_root = 0: the package defines 0 / 0 := 0.

# Not the cautious optimizers: their mask zeroes the steps that disagree with
# the gradient, so `updates != 0` below does not hold for them; C-AAdamW's
# 0 / 0 is AAdam's (checked here through aadamw), C-AdamW's optax.adam's NaN
# (docs/deviations.md, zero-over-zero).
ZERO_EPS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "aadam_sign_change": lambda: ao.aadam(0.1, eps=0.0, eps_root=0.0),
    "aadam_sign": lambda: ao.aadam(0.1, eps=0.0, eps_root=0.0, variant="sign"),
    "aadam_magnitude": lambda: ao.aadam(
        0.1, eps=0.0, eps_root=0.0, variant="magnitude"
    ),
    "aadam_no_bias_correction": lambda: ao.aadam(
        0.1, eps=0.0, eps_root=0.0, bias_correction=False
    ),
    "aadamax": lambda: ao.aadamax(0.1, eps=0.0),
    "aamsgrad": lambda: ao.aamsgrad(0.1, eps=0.0, eps_root=0.0),
    "aadamw": lambda: ao.aadamw(0.1, eps=0.0, eps_root=0.0, weight_decay=0.0),
}


@pytest.mark.parametrize("name", list(ZERO_EPS))
def test_zero_eps_gradients_that_are_or_become_zero_give_finite_steps(
    name: str,
) -> None:
    """With eps = eps_root = 0, a component whose gradient has always been zero
    has `m = v = 0` and its update is exactly 0 (0 / 0 := 0), at every step.

    After real gradients, a long run of zeros: `m` decays as b1^k and `sqrt(v)`
    as b2^(k/2), so `m / sqrt(v)` decays to 0 (b1 < sqrt(b2)); when `m`
    underflows first the quotient is 0 / x = 0, and when both reach 0 it is
    0 / 0 := 0. No step is ever NaN or Inf, and the last ones are 0."""
    opt = ZERO_EPS[name]()
    params = {"w": jnp.array([1.0, -2.0, 3.0, 0.5])}
    state = opt.init(params)

    def body(carry: Any, step: jax.Array) -> tuple[Any, jax.Array]:
        params, state = carry
        real = jnp.array([0.3, -1e-3, 20.0, 0.0]) * (-1.0) ** step
        grads = {"w": jnp.where(step < 10, real, 0.0)}
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), updates["w"]

    (params, state), updates = jax.jit(
        lambda c: jax.lax.scan(body, c, jnp.arange(LONG_RUN))
    )((params, state))
    np.testing.assert_array_equal(updates[:, 3], 0.0)
    assert params["w"][3] == 0.5
    assert np.all(np.isfinite(updates))
    assert np.all(np.isfinite(params["w"]))
    assert np.all(updates[:10, :3] != 0)
    np.testing.assert_array_equal(updates[-1], 0.0)


def test_zero_eps_updates_have_finite_derivatives() -> None:
    """Meta-learning differentiates through the update. At a component whose
    gradients have always been zero the update is 0 / 0 := 0; its derivative
    must be 0, not NaN, and the other components' derivatives must be what
    they are without it (the update is element-wise): the two leaves below
    differ only by that component. AAdam's direction goes through both the
    square root and the division that define 0 / 0 := 0."""
    weights = {"with": jnp.array([1.0, 2.0, 3.0]), "without": jnp.array([1.0, 2.0])}

    def loss(grads: Any, b1: jax.Array) -> jax.Array:
        opt = optax.inject_hyperparams(ao.aadam)(0.1, b1=b1, eps=0.0)
        state = opt.init(grads)
        total = jnp.zeros(())
        for step in range(3):
            updates, state = opt.update(optax.tree.scale(step + 1.0, grads), state)
            total = total + optax.tree.vdot(updates, weights)
        return total

    grads = {"with": jnp.array([0.5, -2.0, 0.0]), "without": jnp.array([0.5, -2.0])}
    by_grads, by_b1 = jax.jit(jax.grad(loss, argnums=(0, 1)))(grads, jnp.array(0.8))
    assert np.all(np.isfinite(by_grads["with"])), by_grads
    assert np.isfinite(by_b1), by_b1
    assert by_grads["with"][2] == 0.0
    np.testing.assert_allclose(by_grads["with"][:2], by_grads["without"], rtol=1e-6)


@pytest.mark.parametrize("eps_array", [False, True], ids=["eps_number", "eps_array"])
def test_first_step_derivatives_match_the_equations(eps_array: bool) -> None:
    """With eps > 0 the update is differentiable everywhere, a zero gradient
    included. AAdam's first step is `-lr b1 g / (|g| + eps)` (`mhat = g`,
    `vhat = g^2`, no memory), whose derivative is `-lr b1 eps / (|g| + eps)^2`
    (`-lr b1 / eps` at `g = 0`) and whose second derivative is
    `2 lr b1 eps sign(g) / (|g| + eps)^3` (0 at `g = 0`, where the one-sided
    limits differ). A Python eps divides plainly; `inject_hyperparams` passes
    eps as a JAX array, which goes through the guarded division. Both must
    give these, and no NaN."""
    lr, b1, eps = 0.1, 0.9, 1e-3
    if eps_array:
        opt = optax.inject_hyperparams(ao.aadam)(lr, b1=b1, eps=eps)
    else:
        opt = ao.aadam(lr, b1=b1, eps=eps)
    grads = jnp.array([0.0, 0.5, -2.0])

    def first_step(grads: jax.Array) -> jax.Array:
        updates, _ = opt.update(grads, opt.init(grads))
        return updates

    derivative = jax.jit(jax.jacfwd(first_step))(grads)
    g = np.asarray(grads, np.float64)
    expected = -lr * b1 * eps / (np.abs(g) + eps) ** 2
    # float32 cancels digits in `(|g| + eps) - |g|`: 1e-3 of relative error.
    np.testing.assert_allclose(np.diag(derivative), expected, rtol=1e-3)
    # Reverse mode agrees with forward mode.
    np.testing.assert_allclose(jax.jacrev(first_step)(grads), derivative, rtol=1e-3)

    def total(grads: jax.Array) -> jax.Array:
        return first_step(grads).sum()

    second = 2 * lr * b1 * eps * np.sign(g) / (np.abs(g) + eps) ** 3
    for hessian in (jax.hessian(total), jax.jacrev(jax.jacrev(total))):
        values = np.asarray(jax.jit(hessian)(grads))
        assert np.all(np.isfinite(values)), values
        np.testing.assert_allclose(np.diag(values), second, rtol=1e-2, atol=1e-9)


@pytest.mark.parametrize(
    ("dtype", "eps"), [(jnp.float32, 1e-40), (jnp.bfloat16, 1e-39)]
)
def test_subnormal_eps_is_not_trusted_to_keep_the_denominator_positive(
    dtype: Any, eps: float
) -> None:
    """XLA:CPU flushes subnormals to 0, so a subnormal eps adds nothing: the
    never-seen component is 0 / 0 and must come out as 0, not NaN."""
    opt = ao.aadam(0.1, eps=eps)
    grads = jnp.array([0.0, 1.0], dtype)
    updates, state = opt.update(grads, opt.init(grads))
    updates, state = opt.update(grads, state)
    assert updates[0] == 0
    assert np.isfinite(np.asarray(updates, np.float32)).all()
    assert np.isfinite(np.asarray(state[0].prev_update, np.float32)).all()


@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_complex_gradient_at_the_bottom_of_float32_gives_no_nan(eps: float) -> None:
    """AAdaMax divides the complex first moment by the real `max(b2 v, |g|)`.
    Divided as complex numbers, a tiny real denominator is squared to 0 and
    the quotient is NaN; divided part by part it is finite."""
    opt = ao.aadamax(0.1, eps=eps)
    grads = jnp.array([1.2e-38, 1.0], jnp.complex64)
    state = opt.init(grads)
    for _ in range(2):
        updates, state = jax.jit(opt.update)(grads, state)
        assert np.isfinite(np.asarray(updates)).all(), updates
    assert np.isfinite(np.asarray(state[0].prev_update)).all()
