"""`minimize`: the tutorial's stopping rules, in one compiled loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aadam_optax
from aadam_optax._minimize import MinimizeInfo, minimize

TARGET = {"a": np.array([3.0, -1.0, 0.5]), "b": np.array([[2.0, -2.0], [1.0, 0.0]])}


def quadratic(params):
    return sum(jnp.sum((params[k] - TARGET[k]) ** 2) for k in sorted(TARGET))


def zeros_like_target(dtype=jnp.float32):
    return {k: jnp.zeros(v.shape, dtype) for k, v in TARGET.items()}


def replay_moves(fun, params, optimizer, num_steps):
    """Python-loop replay: the params and ||theta_{n+1} - theta_n|| per step."""
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        updates, state = optimizer.update(jax.grad(fun)(params), state, params)
        new_params = optax.apply_updates(params, updates)
        moved = math_norm(jax.tree.map(jnp.subtract, new_params, params))
        return new_params, state, moved

    moves = []
    for _ in range(num_steps):
        params, state, moved = step(params, state)
        moves.append(float(moved))
    return params, moves


def math_norm(tree):
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves))


def test_sgd_stops_at_the_step_the_closed_form_predicts():
    # sgd(lr) on sum((x - c)^2): x_n - c = (1 - 2 lr)^n (x_0 - c), so update n
    # moves the params by 2 lr (1 - 2 lr)^(n-1) ||x_0 - c||.
    lr, tol = 0.1, 1e-4
    with jax.enable_x64(True):
        start = zeros_like_target(jnp.float64)
        distance = math.sqrt(sum(float(np.sum(v**2)) for v in TARGET.values()))
        expected_steps = next(
            n
            for n in range(1, 10_000)
            if 2 * lr * (1 - 2 * lr) ** (n - 1) * distance <= tol
        )
        params, _, info = minimize(
            quadratic, start, optax.sgd(lr), max_steps=1000, tol=tol
        )
        assert isinstance(info, MinimizeInfo)
        assert info.steps.dtype == jnp.int32
        assert int(info.steps) == expected_steps
        assert bool(info.converged)
        shrink = (1 - 2 * lr) ** expected_steps
        for k in TARGET:
            np.testing.assert_allclose(
                params[k], TARGET[k] * (1 - shrink), rtol=1e-12, atol=1e-12
            )
        # info.loss is the loss at the returned params.
        np.testing.assert_allclose(info.loss, quadratic(params), rtol=1e-12)


@pytest.mark.parametrize(
    "optimizer",
    [aadam_optax.aadam(0.05), optax.adam(0.05), optax.sgd(0.05)],
    ids=["aadam", "adam", "sgd"],
)
def test_stopping_condition_holds_at_the_stop_and_not_one_step_before(optimizer):
    tol = 1e-3
    max_steps = 2000
    with jax.enable_x64(True):
        start = zeros_like_target(jnp.float64)
        params, _, info = minimize(
            quadratic, start, optimizer, max_steps=max_steps, tol=tol
        )
        steps = int(info.steps)
        assert bool(info.converged)
        assert 1 < steps < max_steps
        replayed, moves = replay_moves(quadratic, start, optimizer, steps)
    # A tiny slack: the compiled loop and the replay may round differently.
    assert moves[-1] <= tol * (1 + 1e-9)
    assert moves[-2] > tol * (1 - 1e-9)
    assert all(m > tol * (1 - 1e-9) for m in moves[:-1])
    for k in TARGET:
        np.testing.assert_allclose(params[k], replayed[k], rtol=1e-10, atol=1e-12)
    # ...and the run really reached the minimum's neighbourhood.
    assert float(info.loss) < 1e-2


def test_without_tol_runs_exactly_max_steps():
    optimizer = aadam_optax.aadam(0.01)
    with jax.enable_x64(True):
        start = zeros_like_target(jnp.float64)
        params, state, info = minimize(quadratic, start, optimizer, max_steps=37)
        replayed, _ = replay_moves(quadratic, start, optimizer, 37)
    assert int(info.steps) == 37
    assert not bool(info.converged)
    # The AAdam state counted every update.
    assert int(state[0].count) == 37
    for k in TARGET:
        np.testing.assert_allclose(params[k], replayed[k], rtol=1e-10, atol=1e-12)


def test_tol_not_reached_stops_at_max_steps_unconverged():
    # sgd(0.1) moves by 2 * 0.1 * 0.8**(n-1) * ||c||: far above 1e-6 for n <= 5.
    params, _, info = minimize(
        quadratic, zeros_like_target(), optax.sgd(0.1), max_steps=5, tol=1e-6
    )
    assert int(info.steps) == 5
    assert not bool(info.converged)
    np.testing.assert_allclose(info.loss, quadratic(params), rtol=1e-6)


def test_tol_met_on_the_last_allowed_step_counts_as_converged():
    # sgd(0.25) on (x - 3)^2 from 0: update n moves x by exactly 3 * 2**-n,
    # so tol = 3/16 is first met at n = 4.
    fun = lambda x: (x - 3.0) ** 2  # noqa: E731
    _, _, info = minimize(fun, jnp.array(0.0), optax.sgd(0.25), max_steps=4, tol=3 / 16)
    assert int(info.steps) == 4 and bool(info.converged)
    _, _, info = minimize(fun, jnp.array(0.0), optax.sgd(0.25), max_steps=3, tol=3 / 16)
    assert int(info.steps) == 3 and not bool(info.converged)


def test_has_aux_returns_aux_at_the_returned_params():
    def fun(params):
        residual = params["a"] - TARGET["a"]
        return jnp.sum(residual**2), {"max_residual": jnp.max(jnp.abs(residual))}

    start = {"a": jnp.zeros(3)}
    params, _, info = minimize(
        fun, start, aadam_optax.aadam(0.05), max_steps=50, has_aux=True
    )
    expected_loss, expected_aux = fun(params)
    np.testing.assert_allclose(info.loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(
        info.aux["max_residual"], expected_aux["max_residual"], rtol=1e-6
    )
    # And the loss did go down from sum(c^2).
    assert float(info.loss) < float(np.sum(TARGET["a"] ** 2))


def test_works_under_jit_with_a_traced_tol():
    optimizer = aadam_optax.aadam(0.05)

    @jax.jit
    def run(params, tol):
        return minimize(quadratic, params, optimizer, max_steps=2000, tol=tol)

    start = zeros_like_target()
    _, _, loose = run(start, jnp.float32(1e-2))
    _, _, tight = run(start, jnp.float32(1e-4))
    eager_params, _, eager = minimize(
        quadratic, start, optimizer, max_steps=2000, tol=1e-4
    )
    assert bool(loose.converged) and bool(tight.converged)
    assert int(loose.steps) < int(tight.steps)
    assert int(tight.steps) == int(eager.steps)
    np.testing.assert_allclose(tight.loss, eager.loss, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "optimizer",
    [
        aadam_optax.aadam(0.1),
        aadam_optax.aadamw(0.1, weight_decay=0.0),
        optax.adam(0.1),
        optax.sgd(0.1),
        # A plain GradientTransformation, without the extra-args protocol.
        optax.GradientTransformation(*optax.sgd(0.1)[:2]),
    ],
    ids=["aadam", "aadamw", "adam", "sgd", "plain"],
)
def test_reaches_the_minimum_with_any_optax_optimizer(optimizer):
    params, _, info = minimize(
        quadratic, zeros_like_target(), optimizer, max_steps=1000, tol=1e-6
    )
    assert bool(info.converged)
    for k in TARGET:
        np.testing.assert_allclose(params[k], TARGET[k], atol=1e-3)


def test_lbfgs_gets_the_extra_args_and_converges_fast():
    # optax.lbfgs's line search needs value, grad and value_fn (it raises
    # without value_fn). On an ill-conditioned quadratic over a pytree it
    # converges in a handful of steps, far fewer than sgd could at any stable
    # step size.
    scales = {"a": jnp.array([1.0, 10.0, 100.0]), "b": jnp.full((2, 2), 30.0)}

    def fun(params):
        return sum(
            jnp.sum(scales[k] * (params[k] - TARGET[k]) ** 2) for k in sorted(TARGET)
        )

    params, _, info = minimize(
        fun, zeros_like_target(), optax.lbfgs(), max_steps=100, tol=1e-6
    )
    assert bool(info.converged)
    assert int(info.steps) <= 20
    for k in TARGET:
        np.testing.assert_allclose(params[k], TARGET[k], atol=1e-4)


@pytest.mark.parametrize("max_steps", [0, -3, 2.5, True, "10", None])
def test_bad_max_steps_raises(max_steps):
    with pytest.raises(ValueError, match="max_steps"):
        minimize(quadratic, zeros_like_target(), optax.sgd(0.1), max_steps=max_steps)


@pytest.mark.parametrize("tol", [-1e-3, float("nan"), "small", [1e-3, 1e-4]])
def test_bad_tol_raises(tol):
    with pytest.raises(ValueError, match="tol"):
        minimize(quadratic, zeros_like_target(), optax.sgd(0.1), max_steps=10, tol=tol)


@pytest.mark.parametrize(
    "optimizer",
    [
        aadam_optax.aadam(optax.linear_schedule(0.0, 0.1, 10)),
        optax.MultiSteps(aadam_optax.aadam(0.1), every_k_schedule=4),
    ],
    ids=["warmup_from_zero", "multisteps"],
)
def test_an_optimizer_that_holds_still_is_not_converged(optimizer):
    # Both leave the params exactly in place on their first update(s) although
    # the gradient is nonzero; that is no evidence of a minimum.
    def fun(x):
        return jnp.sum((x - 3.0) ** 2)

    params, _, info = minimize(fun, jnp.zeros(2), optimizer, max_steps=2000, tol=1e-6)
    assert int(info.steps) > 4
    np.testing.assert_allclose(params, 3.0, atol=1e-3)


def test_a_zero_move_at_a_stationary_point_is_converged():
    # Starting at the minimum the gradient is 0 and sgd does not move: converged
    # after the first update.
    params, _, info = minimize(
        lambda x: jnp.sum(x**2), jnp.zeros(3), optax.sgd(0.1), max_steps=50, tol=0.0
    )
    assert bool(info.converged) and int(info.steps) == 1


def test_bad_optimizer_or_has_aux_raises():
    with pytest.raises(TypeError, match="^optimizer must be an optax"):
        minimize(lambda x: x**2, 1.0, aadam_optax.aadam, max_steps=3)
    with pytest.raises(TypeError, match="^has_aux must be True or False"):
        minimize(lambda x: x**2, 1.0, optax.sgd(0.1), max_steps=3, has_aux="no")
