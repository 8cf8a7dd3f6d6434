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
    ],
    ids=["aadam", "aadamax", "aamsgrad", "aadamw"],
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


@pytest.mark.parametrize("name", ["aadam", "aadamax"])
def test_zero_eps_updates_have_finite_derivatives(name: str) -> None:
    """Meta-learning differentiates through the update. At a component whose
    gradients have always been zero the update is 0 / 0 := 0; its derivative
    must be 0, not NaN, and the other components' derivatives must be what
    they are without it (the update is element-wise): the two leaves below
    differ only by that component."""
    weights = {"with": jnp.array([1.0, 2.0, 3.0]), "without": jnp.array([1.0, 2.0])}

    def loss(grads: Any, b1: jax.Array) -> jax.Array:
        opt = optax.inject_hyperparams(getattr(ao, name))(0.1, b1=b1, eps=0.0)
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
