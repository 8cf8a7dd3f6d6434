"""Whole optimisation runs of the package against the NumPy reference.

The package runs jitted in float64 (`jax.enable_x64` locally) for 300 steps at
three learning rates. Every rule is element-wise and the test problems share no
parameter, so all problems are optimised at once: the params are two vectors
holding the problems' parameters side by side, and the loss is the sum of the
problems' losses. That joint run is exactly one independent run per problem,
which is what the reference does. Compiling is most of the cost, so every
configuration below (optimizer x variant x setting) runs in the body of one
`lax.scan`, compiled once and shared by the parametrized tests.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest

import aadam_optax

STEPS = 300
LEARNING_RATES = np.array([1e-3, 1e-2, 1e-1])
# Honest float64 tolerances: the two implementations round differently (JAX's
# autodiff gradients, XLA's op order), and 300 steps of Rosenbrock amplify that
# to ~1e-13; a wrong rule shows up at 1e-4 or more.
RTOL = 1e-10
ATOL_SCALE = 1e-12

_rng = np.random.default_rng(20180430)
_FEATURES = _rng.normal(size=(16, 3))
_LABELS = (_rng.random(16) < 0.5).astype(np.float64)
# L2 keeps the optimum finite: on separable data the weights would grow without
# bound and the gradient would be a cancellation 1 - sigmoid(z) ~ 1e-10.
_L2 = 0.05
_CURVATURE = np.array([1.0, 10.0, 0.1])
_CENTER = np.array([1.0, -2.0, 0.5])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _rosenbrock_grad(p: np.ndarray) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    return np.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)], -1)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A test problem and where its parameters sit in the joint params.

    Attributes:
      leaf: the params' key holding this problem's parameters.
      start: the initial parameters; they occupy `leaf[offset:offset + size]`.
      offset: where they start in the leaf.
      numpy_grad: the gradient in NumPy (any leading batch axes).
      jax_loss: the loss in JAX, for `jax.grad`.
    """

    leaf: str
    start: np.ndarray
    offset: int
    numpy_grad: Callable[[np.ndarray], np.ndarray]
    jax_loss: Callable[[jax.Array], jax.Array]

    def part(self, leaf: Any) -> Any:
        """This problem's slice of (a batch of) the leaf, last axis."""
        return leaf[..., self.offset : self.offset + self.start.size]


PROBLEMS: dict[str, Problem] = {
    # An ill-conditioned quadratic: curvatures 0.1 .. 10.
    "quadratic": Problem(
        "decayed",
        np.zeros(3),
        0,
        lambda x: _CURVATURE * (x - _CENTER),
        lambda x: 0.5 * jnp.sum(_CURVATURE * (x - _CENTER) ** 2),
    ),
    # L2-regularised logistic regression on a small random dataset, started far
    # enough out that 300 steps do not reach the optimum: there Adam drives the
    # gradient down to ~1e-11, mostly rounding, and `jax.grad` and the NumPy
    # gradient (not the optimizers) would set the two runs apart.
    "logistic": Problem(
        "decayed",
        np.array([4.0, -4.0, 4.0]),
        3,
        lambda w: (_sigmoid(w @ _FEATURES.T) - _LABELS) @ _FEATURES / 16 + _L2 * w,
        lambda w: (
            jnp.mean(jax.nn.softplus(_FEATURES @ w) - _LABELS * (_FEATURES @ w))
            + 0.5 * _L2 * jnp.sum(w**2)
        ),
    ),
    "rosenbrock": Problem(
        "kept",
        np.array([-1.2, 1.0]),
        0,
        _rosenbrock_grad,
        lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
    ),
    # 0.5 * relu(x)^2: the gradient is exactly 0 wherever x <= 0, from the start
    # for two components, and mid-run once the others cross 0.
    "relu": Problem(
        "kept",
        np.array([1.0, -0.5, 0.3, 0.0]),
        2,
        lambda x: np.maximum(x, 0.0),
        lambda x: 0.5 * jnp.sum(jax.nn.relu(x) ** 2),
    ),
}
# AAdamW's mask in the tests that use one: decay the first leaf only.
MASK = {"decayed": True, "kept": False}


def initial_params() -> dict[str, jax.Array]:
    leaves: dict[str, list[np.ndarray]] = {"decayed": [], "kept": []}
    for problem in PROBLEMS.values():
        leaves[problem.leaf].append(problem.start)
    return {key: jnp.asarray(np.concatenate(parts)) for key, parts in leaves.items()}


def joint_loss(params: dict[str, jax.Array]) -> jax.Array:
    return sum(p.jax_loss(p.part(params[p.leaf])) for p in PROBLEMS.values())


def assert_close(
    actual: Any, expected: np.ndarray, what: str, rtol: float = RTOL
) -> None:
    """`rtol` plus an absolute slack of `ATOL_SCALE` times the array's size."""
    expected = np.asarray(expected)
    atol = ATOL_SCALE * float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(
        np.asarray(actual), expected, rtol=rtol, atol=atol, err_msg=what
    )


def core_state(state: Any) -> dict[str, Any]:
    """The acceleration state of the first stage of a chain, as a dict."""
    first = state[0]
    if isinstance(first, aadam_optax.AccelerateState):
        inner = first.inner_state
        return {
            "count": inner.count,
            "mu": inner.mu,
            "nu": inner.nu,
            "prev_update": first.prev_update,
            "prev_grad_sign": first.prev_grad_sign,
        }
    return first._asdict()


@dataclasses.dataclass(frozen=True)
class Case:
    """An optimizer as users build it, and the reference configuration it is."""

    make: Callable[[Any, str], optax.GradientTransformation]
    config: Callable[[str], ref.Config]
    weight_decay: float = 0.0
    decay_mask: dict[str, bool] | None = None


# Non-default hyperparameters, so that a swapped or dropped argument shows.
B1, B2, EPS = 0.85, 0.995, 1e-7
SCHEDULE_DECAY = 0.98
LITERAL_EPS = 1e-8


def _schedule(learning_rate: Any) -> Callable[[Any], Any]:
    """`lr * decay**k`, called by optax with `k` steps already taken."""
    return lambda count: learning_rate * SCHEDULE_DECAY**count


CASES: dict[str, Case] = {
    "aadam": Case(
        lambda lr, v: aadam_optax.aadam(lr, B1, B2, EPS, variant=v),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v),
    ),
    "aadam_defaults": Case(
        lambda lr, v: aadam_optax.aadam(lr, variant=v),
        lambda v: ref.Config("adam", 0.9, 0.999, 1e-8, 0.0, v),
    ),
    "aadam_eps_root": Case(
        lambda lr, v: aadam_optax.aadam(lr, B1, B2, 0.0, 1e-6, variant=v),
        lambda v: ref.Config("adam", B1, B2, 0.0, 1e-6, v),
    ),
    # The AAdam text's own form, eps inside the root only.
    "aadam_literal_eps": Case(
        lambda lr, v: aadam_optax.aadam(lr, B1, B2, 0.0, LITERAL_EPS, variant=v),
        lambda v: ref.Config("adam", B1, B2, 0.0, LITERAL_EPS, v),
    ),
    # No eps at all: 0 / 0 := 0 where the gradient has always been 0.
    "aadam_no_eps": Case(
        lambda lr, v: aadam_optax.aadam(lr, B1, B2, 0.0, 0.0, variant=v),
        lambda v: ref.Config("adam", B1, B2, 0.0, 0.0, v),
    ),
    "aadam_schedule": Case(
        lambda lr, v: aadam_optax.aadam(_schedule(lr), B1, B2, EPS, variant=v),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v),
    ),
    "aadam_no_bias_correction": Case(
        lambda lr, v: aadam_optax.aadam(
            lr, B1, B2, EPS, variant=v, bias_correction=False
        ),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v, bias_correction=False),
    ),
    "aadamw": Case(
        lambda lr, v: aadam_optax.aadamw(lr, B1, B2, EPS, weight_decay=0.05, variant=v),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v),
        weight_decay=0.05,
    ),
    "aadamw_masked": Case(
        lambda lr, v: aadam_optax.aadamw(
            lr, B1, B2, EPS, weight_decay=0.05, mask=MASK, variant=v
        ),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v),
        weight_decay=0.05,
        decay_mask=MASK,
    ),
    "aadamax": Case(
        lambda lr, v: aadam_optax.aadamax(lr, B1, B2, EPS, variant=v),
        lambda v: ref.Config("adamax", B1, B2, EPS, 0.0, v),
    ),
    "aamsgrad": Case(
        lambda lr, v: aadam_optax.aamsgrad(lr, B1, B2, EPS, 1e-9, variant=v),
        lambda v: ref.Config("amsgrad", B1, B2, EPS, 1e-9, v),
    ),
    "accelerate_adam": Case(
        lambda lr, v: optax.chain(
            aadam_optax.accelerate(optax.scale_by_adam(B1, B2, EPS), B1, variant=v),
            optax.scale_by_learning_rate(lr),
        ),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v),
    ),
}
RUNS = [(case, variant) for case in CASES for variant in aadam_optax.VARIANTS]


@dataclasses.dataclass(frozen=True)
class PackageRun:
    """The package's run of one configuration, as NumPy arrays.

    Attributes:
      params: the params each gradient was taken at, axes (step, lr, ...).
      updates: the updates, axes (step, lr, ...).
      state: the final optimizer state, axes (lr, ...).
    """

    params: dict[str, np.ndarray]
    updates: dict[str, np.ndarray]
    state: Any


@functools.cache
def package_runs() -> dict[tuple[str, str], PackageRun]:
    """Every configuration in `RUNS`, in one compiled scan, vmapped over the lrs."""

    def run(learning_rate: jax.Array) -> list[Any]:
        params = initial_params()
        optimizers = [CASES[case].make(learning_rate, v) for case, v in RUNS]

        def body(carry: list[Any], _: Any) -> tuple[list[Any], list[Any]]:
            new_carry, outputs = [], []
            for optimizer, (theta, state) in zip(optimizers, carry, strict=True):
                grads = jax.grad(joint_loss)(theta)
                updates, state = optimizer.update(grads, state, theta)
                new_carry.append((optax.apply_updates(theta, updates), state))
                outputs.append((theta, updates))
            return new_carry, outputs

        start = [(params, optimizer.init(params)) for optimizer in optimizers]
        carry, outputs = jax.lax.scan(body, start, None, length=STEPS)
        return [(h, u, s) for (_, s), (h, u) in zip(carry, outputs, strict=True)]

    with jax.enable_x64(True):
        results = jax.jit(jax.vmap(run))(jnp.asarray(LEARNING_RATES))
        results = jax.tree.map(np.asarray, results)

    def step_first(tree: Any) -> Any:
        return jax.tree.map(lambda x: np.swapaxes(x, 0, 1), tree)

    return {
        key: PackageRun(step_first(history), step_first(updates), state)
        for key, (history, updates, state) in zip(RUNS, results, strict=True)
    }


def reference_learning_rate(case_name: str) -> ref.LearningRate:
    rates = LEARNING_RATES[:, None]
    if case_name == "aadam_schedule":
        return lambda steps_taken: rates * SCHEDULE_DECAY**steps_taken
    return rates


def reference_run(case_name: str, variant: str, problem_name: str) -> ref.Trajectory:
    """The reference trajectory of one problem, batched over the learning rates."""
    case, problem = CASES[case_name], PROBLEMS[problem_name]
    mask = True if case.decay_mask is None else case.decay_mask[problem.leaf]
    return ref.run_trajectory(
        problem.numpy_grad,
        np.broadcast_to(problem.start, (len(LEARNING_RATES), problem.start.size)),
        STEPS,
        reference_learning_rate(case_name),
        case.config(variant),
        case.weight_decay,
        mask,
    )


@pytest.mark.parametrize(("case_name", "variant"), RUNS)
@pytest.mark.parametrize("problem_name", list(PROBLEMS))
def test_trajectory_matches_reference(
    case_name: str, variant: str, problem_name: str
) -> None:
    run = package_runs()[case_name, variant]
    problem = PROBLEMS[problem_name]
    expected = reference_run(case_name, variant, problem_name)
    params = problem.part(run.params[problem.leaf])
    updates = problem.part(run.updates[problem.leaf])
    assert np.all(np.isfinite(updates))
    assert_close(params, expected.params, "params")
    assert_close(updates, expected.updates, "updates")


@pytest.mark.parametrize(("case_name", "variant"), RUNS)
def test_final_state_matches_reference(case_name: str, variant: str) -> None:
    """count (int32), mu, nu, nu_max, prev_update (float64), prev_grad_sign (int8)."""
    run = package_runs()[case_name, variant]
    fields = core_state(run.state)
    assert fields["count"].dtype == np.int32
    np.testing.assert_array_equal(fields["count"], STEPS)
    for problem_name, problem in PROBLEMS.items():
        expected = reference_run(case_name, variant, problem_name)
        for field in ("mu", "nu", "nu_max", "prev_update"):
            if field not in fields:
                continue
            value = fields[field][problem.leaf]
            assert value.dtype == np.float64, field
            assert_close(
                problem.part(value),
                getattr(expected.state, field),
                f"{problem_name}: {field}",
            )
        signs = fields["prev_grad_sign"][problem.leaf]
        assert signs.dtype == np.int8
        np.testing.assert_array_equal(
            problem.part(signs), expected.state.prev_grad_sign
        )
        if CASES[case_name].weight_decay == 0:
            # prev_update is u_N, the last direction before the learning rate.
            rate = reference_learning_rate(case_name)
            last_rate = rate(STEPS - 1) if callable(rate) else rate
            assert_close(
                -last_rate * problem.part(fields["prev_update"][problem.leaf]),
                expected.updates[-1],
                f"{problem_name}: last update",
            )


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_schedule_is_not_the_literal_rule(variant: str) -> None:
    """Under a schedule the package scales u_{n-1} by the current lr, not its own.

    The text's literal rule keeps each step's own learning rate in
    Delta_{n-1}; with a decaying schedule that is a different optimizer, and
    the schedule run (which matches the reference above) must differ from it.
    """
    run = package_runs()["aadam_schedule", variant]
    problem = PROBLEMS["quadratic"]
    literal = ref.run_literal_trajectory(
        problem.numpy_grad,
        np.broadcast_to(problem.start, (len(LEARNING_RATES), 3)),
        STEPS,
        reference_learning_rate("aadam_schedule"),
        B1,
        B2,
        EPS,
        variant,
    )
    updates = problem.part(run.updates[problem.leaf])
    gap = np.max(np.abs(updates - literal.updates))
    assert gap > 1e-4 * np.max(np.abs(literal.updates))


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
@pytest.mark.parametrize("problem_name", list(PROBLEMS))
def test_literal_source_form(variant: str, problem_name: str) -> None:
    """The AAdam text's rule (Delta with the lr in it) is eps=0, eps_root=eps'."""
    run = package_runs()["aadam_literal_eps", variant]
    problem = PROBLEMS[problem_name]
    literal = ref.run_literal_trajectory(
        problem.numpy_grad,
        np.broadcast_to(problem.start, (len(LEARNING_RATES), problem.start.size)),
        STEPS,
        LEARNING_RATES[:, None],
        B1,
        B2,
        LITERAL_EPS,
        variant,
    )
    assert_close(problem.part(run.params[problem.leaf]), literal.params, "params")
    assert_close(problem.part(run.updates[problem.leaf]), literal.updates, "updates")


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_zero_over_zero_is_no_step(variant: str) -> None:
    """eps = eps_root = 0: components whose gradient was always 0 never move."""
    run = package_runs()["aadam_no_eps", variant]
    relu = PROBLEMS["relu"]
    updates = relu.part(run.updates[relu.leaf])
    assert np.all(np.isfinite(updates))
    # x = -0.5 and x = 0 have a zero gradient from the first step on.
    np.testing.assert_array_equal(updates[..., [1, 3]], 0.0)
    assert np.all(np.abs(updates[..., [0, 2]]).max(axis=0) > 0)
