"""Whole optimisation runs of the package against the NumPy reference.

The package runs jitted in float64 (`jax.enable_x64` locally) for 300 steps at
three learning rates. Every rule is element-wise and the test problems share no
parameter, so all problems are optimised at once: the params are two vectors
holding the problems' parameters side by side, and the loss is the sum of the
problems' losses. That joint run is exactly one independent run per problem,
which is what the reference does. Compiling is most of the cost, so every
configuration below (optimizer x variant x setting) runs in the body of one
`lax.scan`, compiled once and shared by the parametrized tests.

Two shorter sections follow, fed given gradient sequences rather than a loss:
complex params (complex64 and complex128, each compiled once), and a zero
coefficient `c_n` meeting an infinite or NaN memory `u_{n-1}`.
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
    # NAdam's look-ahead (`optax.adam(..., nesterov=True)`), accelerated. The
    # look-ahead's two bias corrections differ most on the first steps, where
    # 1 - b1^n and 1 - b1^(n+1) are far apart.
    "aadam_nesterov": Case(
        lambda lr, v: aadam_optax.aadam(lr, B1, B2, EPS, nesterov=True, variant=v),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v, nesterov=True),
    ),
    "aadamw_nesterov_masked": Case(
        lambda lr, v: aadam_optax.aadamw(
            lr, B1, B2, EPS, weight_decay=0.05, mask=MASK, nesterov=True, variant=v
        ),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v, nesterov=True),
        weight_decay=0.05,
        decay_mask=MASK,
    ),
    "aadam_nesterov_no_bias_correction": Case(
        lambda lr, v: aadam_optax.aadam(
            lr, B1, B2, EPS, nesterov=True, variant=v, bias_correction=False
        ),
        lambda v: ref.Config(
            "adam", B1, B2, EPS, 0.0, v, bias_correction=False, nesterov=True
        ),
    ),
    "accelerate_nadam": Case(
        lambda lr, v: optax.chain(
            aadam_optax.accelerate(
                optax.scale_by_adam(B1, B2, EPS, nesterov=True), B1, variant=v
            ),
            optax.scale_by_learning_rate(lr),
        ),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v, nesterov=True),
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


# Complex params, against the reference's complex path: given gradient
# sequences (the reference is element-wise, so no loss is needed), every
# optimizer and variant in one compiled scan per dtype.
COMPLEX_STEPS = 40
COMPLEX_LR, COMPLEX_WD = 0.05, 0.3


def complex_grads() -> np.ndarray:
    """Gradients of mixed scale and random signs, parts exactly 0 here and there.

    Column 4 is real (its imaginary part always 0), column 5 is 0 for the
    first 10 steps (`0 / 0 := 0` where eps = 0), and about a fifth of the
    other parts are 0, each part on its own steps.
    """
    rng = np.random.default_rng(1412)
    shape = (COMPLEX_STEPS, 6)
    scale = 10.0 ** rng.uniform(-3, 2, size=shape[1:])
    real = rng.normal(size=shape) * scale
    imag = rng.normal(size=shape) * scale
    real[rng.random(shape) < 0.2] = 0.0
    imag[rng.random(shape) < 0.2] = 0.0
    imag[:, 4] = 0.0
    real[:10, 5] = imag[:10, 5] = 0.0
    return real + 1j * imag


def complex_params() -> np.ndarray:
    rng = np.random.default_rng(1805)
    shape = (COMPLEX_STEPS, 6)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


COMPLEX_CASES: dict[str, Case] = {
    "aadam": CASES["aadam"],
    "aadam_no_eps": CASES["aadam_no_eps"],
    "aadam_nesterov": CASES["aadam_nesterov"],
    "aadamw": Case(
        lambda lr, v: aadam_optax.aadamw(
            lr, B1, B2, EPS, weight_decay=COMPLEX_WD, variant=v
        ),
        lambda v: ref.Config("adam", B1, B2, EPS, 0.0, v),
        weight_decay=COMPLEX_WD,
    ),
    "aadamax": CASES["aadamax"],
    "aadamax_no_eps": Case(
        lambda lr, v: aadam_optax.aadamax(lr, B1, B2, 0.0, variant=v),
        lambda v: ref.Config("adamax", B1, B2, 0.0, 0.0, v),
    ),
    "aamsgrad": CASES["aamsgrad"],
    "accelerate_adam": CASES["accelerate_adam"],
}
COMPLEX_RUNS = [(c, v) for c in COMPLEX_CASES for v in aadam_optax.VARIANTS]
COMPLEX_DTYPES = {"complex64": jnp.complex64, "complex128": jnp.complex128}
# complex128 is the float64 reference's precision; complex64 runs in float32,
# from the same complex64 gradients (rounding, over 40 steps).
COMPLEX_RTOL = {"complex64": 2e-6, "complex128": 1e-13}


@functools.cache
def complex_package_runs(dtype_name: str) -> dict[tuple[str, str], tuple[Any, Any]]:
    """`(updates, final state)` of every configuration in `COMPLEX_RUNS`."""
    dtype = COMPLEX_DTYPES[dtype_name]

    def run(grads: jax.Array, params: jax.Array) -> list[Any]:
        optimizers = [
            COMPLEX_CASES[case].make(COMPLEX_LR, v) for case, v in COMPLEX_RUNS
        ]

        def body(states: list[Any], inputs: Any) -> tuple[list[Any], list[Any]]:
            grad, theta = inputs
            pairs = [
                optimizer.update(grad, state, theta)
                for optimizer, state in zip(optimizers, states, strict=True)
            ]
            return [s for _, s in pairs], [u for u, _ in pairs]

        start = [optimizer.init(params[0]) for optimizer in optimizers]
        states, updates = jax.lax.scan(body, start, (grads, params))
        return list(zip(updates, states, strict=True))

    with jax.enable_x64(True):
        grads = jnp.asarray(complex_grads(), dtype)
        params = jnp.asarray(complex_params(), dtype)
        results = jax.tree.map(np.asarray, jax.jit(run)(grads, params))
    return dict(zip(COMPLEX_RUNS, results, strict=True))


def assert_close_by_component(
    actual: Any, expected: np.ndarray, what: str, rtol: float
) -> None:
    """`rtol`, and an absolute slack of `rtol` times each component's largest
    value over the run (the components' scales span five decades)."""
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, what
    scale = np.max(np.abs(expected.reshape(-1, expected.shape[-1])), axis=0)
    np.testing.assert_array_less(
        np.abs(actual - expected), rtol * (np.abs(expected) + scale) + 1e-300, what
    )


@pytest.mark.parametrize("dtype_name", list(COMPLEX_DTYPES))
@pytest.mark.parametrize(("case_name", "variant"), COMPLEX_RUNS)
def test_complex_params_match_reference(
    case_name: str, variant: str, dtype_name: str
) -> None:
    """Complex params: the updates, the moments and the memory are the
    reference's, and each part keeps its own sign (packed `re + 3 * im`)."""
    updates, state = complex_package_runs(dtype_name)[case_name, variant]
    case, rtol = COMPLEX_CASES[case_name], COMPLEX_RTOL[dtype_name]
    # The reference gets exactly the gradients the package got.
    grads = np.asarray(complex_grads().astype(dtype_name), np.complex128)
    params = np.asarray(complex_params().astype(dtype_name), np.complex128)
    expected = ref.run_directions(grads, case.config(variant))
    decay = case.weight_decay * params
    assert updates.dtype == np.dtype(dtype_name)
    assert np.all(np.isfinite(updates))
    if case.config(variant).eps == 0:
        # 0 / 0 := 0 in both parts: no step while the gradient has been 0.
        np.testing.assert_array_equal(updates[:10, 5], 0.0)
    assert_close_by_component(
        updates, -COMPLEX_LR * (expected.accelerated + decay), "updates", rtol
    )
    fields = core_state(state)
    for field in ("mu", "nu", "nu_max", "prev_update"):
        if field not in fields:
            continue
        value = np.asarray(fields[field])
        want = getattr(expected.state, field)
        if not np.iscomplexobj(want):
            # v (and its maximum) is real; Optax stores it in the params' dtype.
            np.testing.assert_array_equal(np.imag(value), 0.0, field)
            value = np.real(value)
        assert_close_by_component(value[None], want[None], field, rtol)
    np.testing.assert_array_equal(
        fields["prev_grad_sign"], ref.packed_signs(expected.state.prev_grad_sign)
    )
    assert fields["prev_grad_sign"].dtype == np.int8


# A zero coefficient c_n contributes exactly 0, even against an infinite or NaN
# memory u_{n-1} (docs/algorithms.md, edge cases). One column per component,
# one row per step.
# aadam with b2 = 0, eps = 0: a zero gradient leaves v = 0 under m != 0, so
# a_n = u_n = inf; the next nonzero gradient follows a zero one, so c_n = 0
# for "sign_change" and "magnitude", and u_n is finite again.
INFINITE_MEMORY_GRADS = np.array(
    [
        [1.0, -2.0, 0.5],
        [0.0, 0.0, -0.5],
        [1.0, 0.0, 0.5],
        [1.0, 3.0, 0.5],
        [-1.0, 3.0, -0.5],
        [1.0, -1.0, 0.5],
    ]
)
# accelerate(optax.scale_by_adam(eps=0, eps_root=0)): Optax's direction is
# 0 / 0 = NaN while a component's gradients have all been 0, and so is u_n;
# a later zero gradient (c_n = 0 for every variant) clears that memory.
NAN_MEMORY_GRADS = np.array(
    [
        [0.0, 0.0, 2.0],
        [0.0, 1.0, -2.0],
        [1.0, 0.0, 2.0],
        [0.0, -1.0, 2.0],
        [1.0, 1.0, -2.0],
        [1.0, 0.0, 2.0],
    ]
)


@functools.cache
def non_finite_memory_runs() -> dict[tuple[str, str], np.ndarray]:
    """The package's directions `u_n` for both sequences, every variant."""
    transforms = {
        (name, v): make(v)
        for v in aadam_optax.VARIANTS
        for name, make in (
            ("infinite", lambda v: aadam_optax.scale_by_aadam(B1, 0.0, 0.0, variant=v)),
            (
                "nan",
                lambda v: aadam_optax.accelerate(
                    optax.scale_by_adam(B1, B2, 0.0, 0.0), B1, variant=v
                ),
            ),
        )
    }

    def run(infinite: jax.Array, nan: jax.Array) -> list[jax.Array]:
        grads = {"infinite": infinite, "nan": nan}

        def directions(key: tuple[str, str]) -> jax.Array:
            transform = transforms[key]

            def body(state: Any, grad: jax.Array) -> tuple[Any, jax.Array]:
                update, state = transform.update(grad, state)
                return state, update

            start = transform.init(grads[key[0]][0])
            return jax.lax.scan(body, start, grads[key[0]])[1]

        return [directions(key) for key in transforms]

    with jax.enable_x64(True):
        results = jax.jit(run)(
            jnp.asarray(INFINITE_MEMORY_GRADS), jnp.asarray(NAN_MEMORY_GRADS)
        )
    return {key: np.asarray(r) for key, r in zip(transforms, results, strict=True)}


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_zero_coefficient_meets_infinite_memory(variant: str) -> None:
    """AAdam's own inf (b2 = 0, eps = 0, gradients 1, 0, 1): the reference's
    rule, inf where it is inf, finite where it is finite, never NaN."""
    actual = non_finite_memory_runs()["infinite", variant]
    config = ref.Config("adam", B1, 0.0, 0.0, 0.0, variant)
    expected = ref.run_directions(INFINITE_MEMORY_GRADS, config).accelerated
    assert np.all(np.isinf(expected[1, :2]))  # the memory overflowed
    assert not np.any(np.isnan(expected))
    if variant != "sign":  # c_n = 0 right after the zero gradients
        assert np.isfinite(expected[2, 0]) and np.isfinite(expected[3, 1])
    np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected))
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_zero_coefficient_meets_nan_memory(variant: str) -> None:
    """Optax's 0 / 0 = NaN, accelerated: u_n is the reference's rule applied to
    Optax's directions; a zero gradient takes none of the NaN memory."""
    actual = non_finite_memory_runs()["nan", variant]
    inner = optax.scale_by_adam(B1, B2, 0.0, 0.0)

    def body(state: Any, grad: jax.Array) -> tuple[Any, jax.Array]:
        direction, state = inner.update(grad, state)
        return state, direction

    with jax.enable_x64(True):
        grads = jnp.asarray(NAN_MEMORY_GRADS)
        _, directions = jax.lax.scan(body, inner.init(grads[0]), grads)
    expected = ref.accelerate_sequence(
        np.asarray(directions), NAN_MEMORY_GRADS, B1, variant
    )
    assert np.all(np.isnan(expected[:2, 0]))  # the memory is NaN
    # Step 4: a zero gradient meets the NaN memory (and, for "sign", the NaN
    # carried through step 3); the direction is finite again.
    assert np.all(np.isfinite(expected[3:, 0]))
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=0)
