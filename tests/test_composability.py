"""The accelerated optimizers compose with the rest of the Optax ecosystem.

Every optimizer the package exports is run through the pieces users combine it
with: `jax.jit`, `optax.chain` (clipping, weight decay), learning-rate schedules,
`optax.inject_hyperparams`, `optax.MultiSteps`, `optax.masked`,
`optax.multi_transform`, `optax.apply_if_finite`,
`optax.tree_utils.tree_map_params`, extra keyword arguments, several dtypes,
complex params and pytrees with empty nodes.

Expected values come from the NumPy reference (`numpy_reference.py`, written
from the equations) applied to what the Optax piece should hand the optimizer:
`chain(clip, opt)` is the reference rule on gradients clipped by hand,
`MultiSteps(opt, k)` the reference on the mean of k gradients, a schedule
multiplies the reference's `u_n` by `schedule(n - 1)`. So each test fails when
the composition is wrong and when the optimizer is.

The cautious optimizers (`cautious_adamw`, `cautious_aadamw`, `cautious(...)`)
mask each leaf (tensor) on its own, so their reference splits the flat
reference direction back into leaves and applies `cautious_reference.mask`
(written from the paper's equations) to each, with the gradient the optimizer
received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import cautious_reference as cref
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest
from jax.flatten_util import ravel_pytree

import aadam_optax as ao

PyTree = Any


def accelerated_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    *,
    variant: ao.Variant = "sign_change",
) -> optax.GradientTransformationExtraArgs:
    """`accelerate(scale_by_adam)` with a learning rate: AAdam built generically.

    A factory function, so that `optax.inject_hyperparams` can inject `b1` into
    both the inner Adam and the acceleration.
    """
    return optax.chain(
        ao.accelerate(
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
            b1,
            variant=variant,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )


def cautious_aadamw_whole_update(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 1e-4,
    cautious_eps: float = 1.0,
    *,
    variant: ao.Variant = "sign_change",
) -> optax.GradientTransformationExtraArgs:
    """`cautious(aadamw(...))`: the mask on the whole update, decay included.

    Unlike `cautious_aadamw`, whose decoupled decay is not masked. A factory,
    so that `optax.inject_hyperparams` injects the mask's `eps` too.
    """
    return ao.cautious(
        ao.aadamw(
            learning_rate,
            b1,
            b2,
            eps,
            eps_root,
            weight_decay=weight_decay,
            variant=variant,
        ),
        eps=cautious_eps,
    )


# What the cautious mask is applied to, leaf by leaf: Adam's direction `a_n`
# (C-AdamW), AAdam's `u_n` (C-AAdamW), both before the learning rate and the
# unmasked decoupled decay; or the whole update, decay included (`cautious`).
Masked = Literal["a_n", "u_n", "update"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One exported optimizer, with what the tests need to know about it.

    Attributes:
      name: the test id.
      factory: builds the optimizer from `learning_rate`, the numeric
        hyperparameters and the static ones.
      hyperparams: every numeric hyperparameter, all injectable.
      static: the non-numeric arguments (variant, bias correction).
      state_type: the NamedTuple type of the first stage of the chain.
      fields: that NamedTuple's documented fields.
      param_copies: how many trees shaped like the params the state holds.
      optax_base: the optax optimizer whose first direction (without its
        decay) AAdam's is `b1` times (C-AdamW's: once), before any cautious
        mask; None where there is none (no bias correction).
      family: the direction `a_n` in the NumPy reference.
      masked: where the cautious mask applies (see `Masked`); None for none.
        The mask's `eps` is the hyperparameter `cautious_eps`.
      checks_params: `init` rejects an integer param, naming it (AAdam's
        check; C-AdamW's `init` is optax.adamw's, which has none: its mask
        refuses the integer gradient at `update` instead).
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    hyperparams: dict[str, float]
    static: dict[str, Any]
    state_type: type
    fields: tuple[str, ...]
    param_copies: int
    optax_base: Callable[..., optax.GradientTransformation] | None
    family: ref.Family = "adam"
    masked: Masked | None = None
    checks_params: bool = True

    @property
    def accelerated(self) -> bool:
        """Whether the update is built on AAdam's `u_n` (else Adam's `a_n`)."""
        return self.masked != "a_n"

    def make(self, **overrides: Any) -> optax.GradientTransformation:
        """The optimizer with the case's hyperparameters, some overridden."""
        return self.factory(**{**self.hyperparams, **self.static, **overrides})


ADAM_HYPERPARAMS = {
    "learning_rate": 0.05,
    "b1": 0.9,
    "b2": 0.99,
    "eps": 1e-8,
    "eps_root": 0.0,
}
AADAM_FIELDS = ("count", "mu", "nu", "prev_update", "prev_grad_sign")

CASES = [
    *(
        Case(
            name=f"aadam-{variant}",
            factory=ao.aadam,
            hyperparams=ADAM_HYPERPARAMS,
            static={"variant": variant},
            state_type=ao.ScaleByAAdamState,
            fields=AADAM_FIELDS,
            param_copies=4,
            optax_base=optax.adam,
        )
        for variant in ao.VARIANTS
    ),
    Case(
        name="aadam-no_bias_correction",
        factory=ao.aadam,
        hyperparams=ADAM_HYPERPARAMS,
        static={"variant": "sign_change", "bias_correction": False},
        state_type=ao.ScaleByAAdamState,
        fields=AADAM_FIELDS,
        param_copies=4,
        optax_base=None,
    ),
    Case(
        name="aadamw",
        factory=ao.aadamw,
        hyperparams={**ADAM_HYPERPARAMS, "weight_decay": 0.01},
        static={"variant": "sign_change"},
        state_type=ao.ScaleByAAdamState,
        fields=AADAM_FIELDS,
        param_copies=4,
        optax_base=optax.adamw,
    ),
    Case(
        name="aadamax",
        factory=ao.aadamax,
        hyperparams={"learning_rate": 0.05, "b1": 0.9, "b2": 0.99, "eps": 1e-8},
        static={"variant": "sign_change"},
        state_type=ao.ScaleByAAdaMaxState,
        fields=AADAM_FIELDS,
        param_copies=4,
        optax_base=optax.adamax,
        family="adamax",
    ),
    Case(
        name="aamsgrad",
        factory=ao.aamsgrad,
        hyperparams=ADAM_HYPERPARAMS,
        static={"variant": "magnitude"},
        state_type=ao.ScaleByAAMSGradState,
        fields=("count", "mu", "nu", "nu_max", "prev_update", "prev_grad_sign"),
        param_copies=5,
        optax_base=optax.amsgrad,
        family="amsgrad",
    ),
    Case(
        name="accelerate-scale_by_adam",
        factory=accelerated_adam,
        hyperparams=ADAM_HYPERPARAMS,
        static={"variant": "sign"},
        state_type=ao.AccelerateState,
        fields=("inner_state", "prev_update", "prev_grad_sign"),
        param_copies=4,
        optax_base=optax.adam,
    ),
    Case(
        name="cautious_adamw",
        factory=ao.cautious_adamw,
        hyperparams={**ADAM_HYPERPARAMS, "weight_decay": 0.01, "cautious_eps": 1.0},
        static={},
        # The state is optax.adamw's own: the mask keeps none.
        state_type=optax.ScaleByAdamState,
        fields=("count", "mu", "nu"),
        param_copies=2,
        optax_base=optax.adamw,
        masked="a_n",
        checks_params=False,
    ),
    Case(
        name="cautious_aadamw",
        factory=ao.cautious_aadamw,
        hyperparams={**ADAM_HYPERPARAMS, "weight_decay": 0.01, "cautious_eps": 1.0},
        static={"variant": "sign_change"},
        state_type=ao.ScaleByAAdamState,
        fields=AADAM_FIELDS,
        param_copies=4,
        optax_base=optax.adamw,
        masked="u_n",
    ),
    Case(
        name="cautious(aadamw)",
        factory=cautious_aadamw_whole_update,
        # The paper's current eps (a tiny one), against the default 1 above.
        hyperparams={**ADAM_HYPERPARAMS, "weight_decay": 0.05, "cautious_eps": 1e-8},
        static={"variant": "magnitude"},
        state_type=ao.ScaleByAAdamState,
        fields=AADAM_FIELDS,
        param_copies=4,
        optax_base=optax.adamw,
        masked="update",
    ),
]
CASE_IDS = [case.name for case in CASES]
parametrize_cases = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)

# Hyperparameter values different from every case's defaults, all valid.
OTHER_HYPERPARAMS = {
    "learning_rate": 0.02,
    "b1": 0.7,
    "b2": 0.95,
    "eps": 1e-3,
    "eps_root": 1e-6,
    "weight_decay": 0.1,
    # 0 divides by the kept count alone (a leaf with none kept is all zeros).
    "cautious_eps": 0.0,
}

RTOL = 2e-5
ATOL = 1e-7


def make_params(seed: int = 0) -> dict[str, jax.Array]:
    """A small pytree of float32 params with a matrix, a vector and a scalar."""
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        "s": jnp.asarray(rng.normal(), jnp.float32),
    }


def make_grads(params: PyTree, steps: int, seed: int = 1, scale: float = 1.0) -> list:
    """`steps` gradient trees shaped like `params`, with frequent sign flips.

    A shared drift plus noise makes some components keep their sign and others
    flip, so every branch of the acceleration is exercised.
    """
    rng = np.random.default_rng(seed)
    drift = jax.tree.map(lambda p: rng.normal(size=np.shape(p)), params)
    return [
        jax.tree.map(
            lambda p, d: jnp.asarray(
                scale * (0.5 * d + rng.normal(size=np.shape(p))), p.dtype
            ),
            params,
            drift,
        )
        for _ in range(steps)
    ]


def run(
    opt: optax.GradientTransformation,
    params: PyTree,
    grads: Sequence[PyTree],
    state: Any = None,
    jit: bool = False,
    **extra_args: Any,
) -> tuple[list, Any, PyTree]:
    """Applies `opt` to `grads` in turn; returns (updates per step, state, params).

    `jit=True` compiles the update once; wrappers built on `lax.cond`
    (`MultiSteps`, `apply_if_finite`) are slow eagerly, since every eager
    `lax.cond` compiles its branches again.
    """
    if state is None:
        state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    all_updates = []
    for grad in grads:
        updates, state = update(grad, state, params, **extra_args)
        params = optax.apply_updates(params, updates)
        all_updates.append(updates)
    return all_updates, state, params


def assert_trees_close(
    actual: PyTree, expected: PyTree, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """Same structure, and every leaf equal to rounding."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(a, np.float64 if not np.iscomplexobj(a) else np.complex128),
            np.asarray(e, np.float64 if not np.iscomplexobj(e) else np.complex128),
            rtol=rtol,
            atol=atol,
        )


def assert_trees_equal(actual: PyTree, expected: PyTree) -> None:
    """Same structure, and every leaf bitwise equal with the same dtype."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert np.asarray(a).dtype == np.asarray(e).dtype
        assert np.array_equal(np.asarray(a), np.asarray(e))


def first_stage(state: Any) -> Any:
    """The state of the first stage of the optimizer's `optax.chain`."""
    return state[0]


REFERENCE_RTOL = 1e-4  # float32 arithmetic against the float64 reference
REFERENCE_ATOL = 1e-6


def leafwise_mask(
    step: np.ndarray,
    grad: np.ndarray,
    sizes: Sequence[int],
    eps: float,
    descent: bool = False,
) -> np.ndarray:
    """`cautious_reference.mask` on each leaf's segment of flat arrays.

    `sizes` are the leaves' sizes in `ravel_pytree`'s order: the mask counts
    the kept components of one leaf, never of the whole tree.
    """
    bounds = np.cumsum(sizes)[:-1]
    # eps = 0 over a leaf with none kept divides by 0; those steps are dropped.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.concatenate(
            [
                np.ravel(cref.mask(s, g, eps, descent))
                for s, g in zip(
                    np.split(step, bounds), np.split(grad, bounds), strict=True
                )
            ]
        )


def case_update(
    case: Case,
    direction: np.ndarray,
    accelerated: np.ndarray,
    gradient: np.ndarray,
    theta: np.ndarray,
    rate: float,
    weight_decay: float,
    cautious_eps: float | None,
    sizes: Sequence[int],
) -> np.ndarray:
    """One update, `-rate * (step + wd * theta)`, from the reference's `a_n` and
    `u_n`, with the case's cautious mask where it has one (flat arrays)."""
    step = accelerated if case.accelerated else direction
    if case.masked in ("a_n", "u_n"):
        assert cautious_eps is not None
        step = leafwise_mask(step, gradient, sizes, cautious_eps)
    update = -rate * (step + weight_decay * theta)
    if case.masked == "update":
        assert cautious_eps is not None
        update = leafwise_mask(update, gradient, sizes, cautious_eps, descent=True)
    return update


def reference_updates(
    case: Case,
    params: PyTree,
    grads: Sequence[PyTree],
    coupled_decay: float = 0.0,
    **overrides: Any,
) -> list[PyTree]:
    """The updates the NumPy reference gives for `grads` in turn, from `params`.

    `coupled_decay` adds `coupled_decay * theta_n` to the n-th gradient (what
    `optax.add_decayed_weights` before the optimizer does); the case's own
    `weight_decay` is AAdamW's decoupled decay, outside `u_n`. `overrides`
    replace the case's hyperparameters (a schedule for `learning_rate`). The
    cautious mask reads the gradient the optimizer received, decay included.
    """
    hyperparams = {**case.hyperparams, **overrides}
    learning_rate = hyperparams.pop("learning_rate")
    weight_decay = hyperparams.pop("weight_decay", 0.0)
    cautious_eps = hyperparams.pop("cautious_eps", None)
    config = ref.Config(case.family, **hyperparams, **case.static)
    flat, unravel = ravel_pytree(params)
    sizes = [np.size(leaf) for leaf in jax.tree.leaves(params)]
    theta = np.asarray(flat, np.float64)
    state = ref.init(theta.shape)
    all_updates = []
    for n, grad in enumerate(grads):
        gradient = np.asarray(ravel_pytree(grad)[0], np.float64)
        gradient = gradient + coupled_decay * theta
        direction, accelerated, state = ref.step(state, gradient, config)
        rate = learning_rate(n) if callable(learning_rate) else learning_rate
        update = case_update(
            case,
            direction,
            accelerated,
            gradient,
            theta,
            float(rate),
            weight_decay,
            cautious_eps,
            sizes,
        )
        all_updates.append(unravel(jnp.asarray(update, flat.dtype)))
        theta = theta + update
    return all_updates


def assert_matches_reference(actual: PyTree, expected: PyTree) -> None:
    assert_trees_close(actual, expected, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)


# --- jax.jit -----------------------------------------------------------------


@parametrize_cases
def test_jit_compiles_once(case: Case) -> None:
    """A jitted training step traces once: the state keeps its types over steps."""
    opt = case.make()
    traces = []

    @jax.jit
    def step(params: PyTree, state: Any, grads: PyTree) -> tuple[PyTree, Any, Any]:
        traces.append(None)  # A Python side effect runs only while tracing.
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    params = make_params()
    state = opt.init(params)
    grads = make_grads(params, 5)
    eager_updates, _, _ = run(opt, params, grads)
    for grad, expected in zip(grads, eager_updates, strict=True):
        params, state, updates = step(params, state, grad)
        assert_trees_close(updates, expected)
    assert len(traces) == 1
    assert step._cache_size() == 1


# --- optax.chain -------------------------------------------------------------


def clip_by_hand(grad: PyTree, max_norm: float) -> PyTree:
    """`g * min(1, max_norm / ||g||)`, the global-norm clipping rule, in NumPy."""
    norm = np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(grad)))
    factor = min(1.0, max_norm / norm)
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x) * factor, x.dtype), grad)


@parametrize_cases
def test_chain_after_clip_by_global_norm(case: Case) -> None:
    """`chain(clip_by_global_norm(c), opt)` is the rule on gradients clipped by
    hand."""
    max_norm = 1.0
    params = make_params()
    # Large gradients are clipped, small ones pass through: both paths are used.
    grads = make_grads(params, 3, scale=5.0) + make_grads(params, 3, seed=2, scale=0.1)
    actual, _, _ = run(
        optax.chain(optax.clip_by_global_norm(max_norm), case.make()), params, grads
    )
    clipped = [clip_by_hand(g, max_norm) for g in grads]
    assert_matches_reference(actual, reference_updates(case, params, clipped))
    # Clipping changed something: the test is not vacuous.
    unclipped = reference_updates(case, params, grads)
    assert not np.allclose(unclipped[-1]["w"], actual[-1]["w"])


@parametrize_cases
def test_chain_after_add_decayed_weights(case: Case) -> None:
    """`chain(add_decayed_weights(wd), opt)` is the rule on `g + wd * params`.

    This is coupled (L2) weight decay: the decay term goes through the
    acceleration, unlike AAdamW's decoupled decay.
    """
    weight_decay = 0.3
    params = make_params()
    grads = make_grads(params, 6)
    opt = optax.chain(optax.add_decayed_weights(weight_decay), case.make())
    actual, _, _ = run(opt, params, grads)
    expected = reference_updates(case, params, grads, coupled_decay=weight_decay)
    assert_matches_reference(actual, expected)


# --- schedules ---------------------------------------------------------------

SCHEDULES = {
    "linear": optax.linear_schedule(0.1, 0.01, transition_steps=4),
    "exponential": optax.exponential_decay(0.1, transition_steps=2, decay_rate=0.5),
}


@parametrize_cases
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_learning_rate_schedule(case: Case, schedule_name: str) -> None:
    """The update at step n is `-schedule(n - 1) * u_n` (for AAdamW, times
    `u_n + wd * params`), with the reference's `u_n`.

    optax counts steps from 0, so the first update uses `schedule(0)`. `u_n` has
    no learning rate in it, so the previous direction is scaled by the current
    learning rate, as docs/algorithms.md documents.
    """
    schedule = SCHEDULES[schedule_name]
    params = make_params()
    grads = make_grads(params, 6)
    actual, _, _ = run(case.make(learning_rate=schedule), params, grads)
    expected = reference_updates(case, params, grads, learning_rate=schedule)
    assert_matches_reference(actual, expected)


# --- optax.inject_hyperparams ------------------------------------------------


@parametrize_cases
def test_inject_hyperparams_matches_plain_optimizer(case: Case) -> None:
    """Every numeric hyperparameter is injected, the static ones are not, and the
    jitted injected optimizer follows the plain one to rounding."""
    injected = optax.inject_hyperparams(case.factory)(**case.hyperparams, **case.static)
    params = make_params()
    state = injected.init(params)
    assert set(state.hyperparams) == set(case.hyperparams)
    # `variant` (a string) and `bias_correction` (a bool) stay Python values: had
    # they been turned into arrays, the constructor's checks would have raised.
    assert not set(case.static) & set(state.hyperparams)
    grads = make_grads(params, 5)
    expected = reference_updates(case, params, grads)
    update = jax.jit(injected.update)
    for grad, expected_updates in zip(grads, expected, strict=True):
        updates, state = update(grad, state, params)
        assert_matches_reference(updates, expected_updates)
        params = optax.apply_updates(params, updates)
    assert update._cache_size() == 1


@parametrize_cases
def test_inject_hyperparams_changes_take_effect(case: Case) -> None:
    """Hyperparameters set in the state are the ones used.

    Setting all of them right after `init` gives the rule with the new values;
    doubling the learning rate mid-run doubles that step's update
    (the learning rate only scales the direction, decay included).
    """
    injected = optax.inject_hyperparams(case.factory)(**case.hyperparams, **case.static)
    params = make_params()
    grads = make_grads(params, 5)
    new_values = {name: OTHER_HYPERPARAMS[name] for name in case.hyperparams}

    state = injected.init(params)
    for name, value in new_values.items():
        state.hyperparams[name] = jnp.asarray(value, state.hyperparams[name].dtype)
    actual, state, params_after = run(injected, params, grads, state=state)
    assert_matches_reference(
        actual, reference_updates(case, params, grads, **new_values)
    )
    # The new values changed the updates: the test is not vacuous.
    old = reference_updates(case, params, grads)
    assert not np.allclose(old[-1]["w"], actual[-1]["w"])

    grad = grads[0]
    updates, _ = injected.update(grad, state, params_after)
    state.hyperparams["learning_rate"] = 2 * state.hyperparams["learning_rate"]
    doubled, _ = injected.update(grad, state, params_after)
    assert_trees_close(doubled, jax.tree.map(lambda x: 2 * x, updates))


# --- optax.MultiSteps --------------------------------------------------------


@parametrize_cases
def test_multi_steps_applies_mean_gradient(case: Case) -> None:
    """`MultiSteps(opt, k)` returns zeros for k - 1 calls, then the rule's update
    for the mean of the k gradients."""
    k = 3
    params = make_params()
    grads = make_grads(params, 3 * k)
    multi = optax.MultiSteps(case.make(), every_k_schedule=k)
    actual, _, _ = run(multi, params, grads, jit=True)

    means = [
        jax.tree.map(lambda *g: sum(g) / k, *grads[i : i + k])
        for i in range(0, len(grads), k)
    ]
    expected = reference_updates(case, params, means)
    for step, updates in enumerate(actual):
        if (step + 1) % k:
            assert_trees_equal(updates, jax.tree.map(jnp.zeros_like, updates))
        else:
            assert_matches_reference(updates, expected[step // k])


# --- optax.masked and optax.multi_transform ----------------------------------


def mixed_params() -> dict[str, jax.Array]:
    """Float params plus an integer leaf (a step counter) that is never trained."""
    params = make_params()
    return {"w": params["w"], "b": params["b"], "step": jnp.asarray(7, jnp.int32)}


def mixed_grads(steps: int) -> list[dict[str, jax.Array]]:
    float_grads = make_grads(make_params(), steps)
    return [
        {"w": g["w"], "b": g["b"], "step": jnp.asarray(1, jnp.int32)}
        for g in float_grads
    ]


@parametrize_cases
def test_masked(case: Case) -> None:
    """`optax.masked` runs the optimizer on the masked-in leaves only; the others,
    the integer one included, pass through unchanged."""
    params = mixed_params()
    grads = mixed_grads(4)
    if case.checks_params:
        with pytest.raises(TypeError, match="step"):
            case.make().init(params)

    mask = {"w": True, "b": False, "step": False}
    actual, _, final_params = run(optax.masked(case.make(), mask), params, grads)
    expected = reference_updates(
        case, {"w": params["w"]}, [{"w": g["w"]} for g in grads]
    )
    for updates, expected_updates, grad in zip(actual, expected, grads, strict=True):
        assert_matches_reference(updates["w"], expected_updates["w"])
        assert_trees_equal(updates["b"], grad["b"])
        assert_trees_equal(updates["step"], grad["step"])
    assert final_params["step"].dtype == jnp.int32


@parametrize_cases
def test_multi_transform(case: Case) -> None:
    """`optax.multi_transform` gives each labelled subtree its own optimizer."""
    params = mixed_params()
    grads = mixed_grads(4)
    sgd_rate = 0.1
    opt = optax.multi_transform(
        {
            "accelerated": case.make(),
            "sgd": optax.sgd(sgd_rate),
            "frozen": optax.set_to_zero(),
        },
        {"w": "accelerated", "b": "sgd", "step": "frozen"},
    )
    actual, _, final_params = run(opt, params, grads)
    expected = reference_updates(
        case, {"w": params["w"]}, [{"w": g["w"]} for g in grads]
    )
    for updates, expected_updates, grad in zip(actual, expected, grads, strict=True):
        assert_matches_reference(updates["w"], expected_updates["w"])
        assert_trees_close(updates["b"], -sgd_rate * grad["b"])
        assert int(updates["step"]) == 0
    assert int(final_params["step"]) == 7


# --- optax.apply_if_finite ---------------------------------------------------


@parametrize_cases
def test_apply_if_finite_skips_nan_step(case: Case) -> None:
    """A NaN gradient leaves params and the whole inner state bitwise unchanged,
    and the run then continues as if that step never happened."""
    params = make_params()
    grads = make_grads(params, 5)
    nan_grad = {**grads[0], "w": grads[0]["w"].at[1, 2].set(jnp.nan)}
    opt = optax.apply_if_finite(case.make(), max_consecutive_errors=3)

    update = jax.jit(opt.update)
    state = opt.init(params)
    for grad in grads[:2]:
        updates, state = update(grad, state, params)
        params = optax.apply_updates(params, updates)
    updates, nan_state = update(nan_grad, state, params)
    assert_trees_equal(optax.apply_updates(params, updates), params)
    assert_trees_equal(nan_state.inner_state, state.inner_state)
    assert int(nan_state.notfinite_count) == 1
    assert not bool(nan_state.last_finite)

    after_nan = []
    state = nan_state
    for grad in grads[2:]:
        updates, state = update(grad, state, params)
        params = optax.apply_updates(params, updates)
        after_nan.append(updates)
    assert update._cache_size() == 1
    expected = reference_updates(case, make_params(), grads)
    assert_matches_reference(after_nan, expected[2:])


# --- optax.tree_utils.tree_map_params ----------------------------------------


@parametrize_cases
def test_tree_map_params(case: Case) -> None:
    """Every param-shaped tree in the state is mapped; the rest is not.

    The sharding use: give each param-shaped tree the params' specs and every
    other leaf (the step count) a replicated spec.
    """
    opt = case.make()
    params = make_params()
    _, state, _ = run(opt, params, make_grads(params, 2))
    specs = {"w": "spec_w", "b": "spec_b", "s": "spec_s"}
    mapped = optax.tree_utils.tree_map_params(
        opt, lambda _, spec: spec, state, specs, transform_non_params=lambda _: "rep"
    )
    leaves = jax.tree.leaves(mapped)
    assert sorted(leaves) == sorted(
        ["spec_w", "spec_b", "spec_s"] * case.param_copies
        + ["rep"] * (len(jax.tree.leaves(state)) - 3 * case.param_copies)
    )
    mapped_first = first_stage(mapped)
    # AAdam's memory; C-AdamW's state is Adam's moments alone.
    memory = "prev_update" if "prev_update" in case.fields else "mu"
    assert getattr(mapped_first, memory) == specs
    if "prev_grad_sign" in case.fields:
        assert mapped_first.prev_grad_sign == specs

    # A numeric map (cast every param-shaped tree to bfloat16) keeps the layout.
    cast = optax.tree_utils.tree_map_params(
        opt, lambda x: x.astype(jnp.bfloat16), state
    )
    assert jax.tree.structure(cast) == jax.tree.structure(state)
    assert getattr(first_stage(cast), memory)["w"].dtype == jnp.bfloat16


# --- extra keyword arguments -------------------------------------------------


@parametrize_cases
def test_extra_args_are_ignored(case: Case) -> None:
    """`update(..., value=..., foo=...)` equals `update(...)`, alone and in a chain."""
    params = make_params()
    grads = make_grads(params, 3)
    extra = {"value": jnp.asarray(3.0), "foo": "bar"}
    for opt in (
        case.make(),
        optax.chain(optax.clip_by_global_norm(1.0), case.make()),
    ):
        with_extra, _, _ = run(opt, params, grads, **extra)
        without, _, _ = run(opt, params, grads)
        assert_trees_equal(with_extra, without)


# --- dtypes ------------------------------------------------------------------


def layout(tree: PyTree) -> PyTree:
    """Each leaf's shape and dtype."""
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


@parametrize_cases
@pytest.mark.parametrize("x64", [False, True], ids=["x32", "x64"])
def test_dtypes_are_kept_under_jit(case: Case, x64: bool) -> None:
    """Updates have the params' dtype, and no state leaf changes dtype or shape
    over several jitted steps (so the step compiles once).

    One tree holds a leaf of each dtype (mixed precision); every operation is
    leafwise, so each leaf is treated as it would be alone. float64 needs x64,
    which also changes the default dtype of Python scalars, so the low-precision
    dtypes are checked with and without it.
    """
    dtypes = [jnp.float16, jnp.bfloat16, jnp.float32] + [jnp.float64] * x64
    rng = np.random.default_rng(4)
    with jax.enable_x64(x64):
        opt = case.make()
        params = {
            jnp.dtype(dtype).name: jnp.asarray(rng.normal(size=(2, 3)), dtype)
            for dtype in dtypes
        }
        grads = make_grads(params, 4)
        state = opt.init(params)
        initial_layout = layout(state)
        params_layout = layout(params)
        update = jax.jit(opt.update)
        for grad in grads:
            updates, state = update(grad, state, params)
            assert layout(updates) == params_layout
            assert layout(state) == initial_layout
            for leaf in jax.tree.leaves(updates):
                assert bool(jnp.all(jnp.isfinite(leaf)))
            params = optax.apply_updates(params, updates)
        assert layout(params) == params_layout
        assert update._cache_size() == 1


# --- complex params ----------------------------------------------------------


def first_step_by_formula(
    case: Case, grad: np.ndarray, params: np.ndarray
) -> np.ndarray:
    """The first update in NumPy (complex128), from docs/algorithms.md.

    `c_1 = 0`, so `u_1 = b1 * a_1`; `m_1 = (1 - b1) g`, `v_1 = (1 - b2) |g|^2`.
    With bias correction every direction of the family is `g / (|g| + eps)` on
    step 1; without it, `m_1 / (sqrt(v_1) + eps)`.
    """
    hp = case.hyperparams
    b1, b2, eps = hp["b1"], hp["b2"], hp["eps"]
    if case.static.get("bias_correction", True):
        direction = grad / (np.abs(grad) + eps)
    else:
        direction = (1 - b1) * grad / (np.sqrt(1 - b2) * np.abs(grad) + eps)
    return first_update(case, direction, grad, params)


def first_update(
    case: Case, direction: np.ndarray, grad: np.ndarray, params: np.ndarray
) -> np.ndarray:
    """The first update from the first direction `a_1` (`u_1 = b1 * a_1`), with
    the case's decay and cautious mask (one leaf)."""
    hp = case.hyperparams
    return case_update(
        case,
        direction,
        hp["b1"] * direction,
        grad,
        params,
        hp["learning_rate"],
        hp.get("weight_decay", 0.0),
        hp.get("cautious_eps"),
        [np.size(grad)],
    )


@parametrize_cases
def test_complex_params(case: Case) -> None:
    """complex64 params: complex64 updates, a first step `b1` times the optax base
    optimizer's (c_1 = 0; C-AdamW's is the base's), masked as pairs of reals by
    the cautious optimizers, and finite later steps."""
    rng = np.random.default_rng(3)
    shape = (5,)
    params = {"z": jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))}
    params = jax.tree.map(lambda x: x.astype(jnp.complex64), params)
    grads = [
        {"z": jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))}
        for _ in range(8)
    ]
    grads = [jax.tree.map(lambda x: x.astype(jnp.complex64), g) for g in grads]
    grad = np.asarray(grads[0]["z"], np.complex128)
    theta = np.asarray(params["z"], np.complex128)

    opt = case.make()
    updates, state = opt.update(grads[0], opt.init(params), params)
    assert updates["z"].dtype == jnp.complex64
    expected = first_step_by_formula(case, grad, theta)
    assert_trees_close(updates["z"], expected, rtol=1e-5, atol=1e-7)

    if case.optax_base is not None:
        hp = case.hyperparams
        base_args = {k: hp[k] for k in ("learning_rate", "b1", "b2", "eps")}
        if "weight_decay" in hp:
            # Isolate optax.adamw's direction; AAdamW's decay is not scaled by b1.
            base_args["weight_decay"] = 0.0
        base = case.optax_base(**base_args)
        base_updates, _ = base.update(grads[0], base.init(params), params)
        direction = -np.asarray(base_updates["z"], np.complex128) / hp["learning_rate"]
        assert_trees_close(
            updates["z"],
            first_update(case, direction, grad, theta),
            rtol=1e-5,
            atol=1e-7,
        )

    later, _, final = run(opt, params, grads[1:], state=state)
    for step_updates in later:
        assert step_updates["z"].dtype == jnp.complex64
        assert bool(jnp.all(jnp.isfinite(step_updates["z"])))
    assert final["z"].dtype == jnp.complex64


def complex_reference_updates(
    case: Case, params: np.ndarray, grads: Sequence[np.ndarray], **overrides: Any
) -> list[np.ndarray]:
    """The updates for one complex leaf, Adam family with bias correction.

    `m_n` is complex and `v_n = b2 v_{n-1} + (1 - b2) |g_n|^2` real, so `a_n` is
    complex; the acceleration reads each real and imaginary part as a real
    number of its own (docs/algorithms.md), as does the mask.
    """
    hp = {**case.hyperparams, **overrides}
    b1, b2, eps, eps_root = hp["b1"], hp["b2"], hp["eps"], hp["eps_root"]
    variant = case.static.get("variant", "sign_change")
    theta = np.asarray(params, np.complex128)
    mu = np.zeros_like(theta)
    nu = np.zeros(theta.shape)
    memory, prev_grad = np.zeros_like(theta), np.zeros_like(theta)
    all_updates = []
    for n, grad in enumerate(grads, start=1):
        grad = np.asarray(grad, np.complex128)
        mu = b1 * mu + (1 - b1) * grad
        nu = b2 * nu + (1 - b2) * np.abs(grad) ** 2
        direction = (mu / (1 - b1**n)) / (np.sqrt(nu / (1 - b2**n) + eps_root) + eps)
        real, imag = (
            ref.accelerate_step(
                part(direction),
                np.sign(part(grad)),
                np.sign(part(prev_grad)),
                part(memory),
                b1,
                variant,
            )
            for part in (np.real, np.imag)
        )
        memory, prev_grad = real + 1j * imag, grad
        update = case_update(
            case,
            direction,
            memory,
            grad,
            theta,
            hp["learning_rate"],
            hp.get("weight_decay", 0.0),
            hp.get("cautious_eps"),
            [grad.size],
        )
        all_updates.append(update)
        theta = theta + update
    return all_updates


@pytest.mark.parametrize(
    "case", [case for case in CASES if case.masked], ids=lambda case: case.name
)
def test_complex_leaf_is_masked_part_by_part(case: Case) -> None:
    """Each real and imaginary part is kept by its own sign, and the leaf's
    count runs over both parts: where the gradient's real part flips but not
    its imaginary part, only the real part of the step is dropped."""
    # No decay, so that a dropped part is 0.
    no_decay = {"weight_decay": 0.0}
    params = np.array([0.5 - 1j, -2 + 0.5j, 1 + 1j, -1 - 1j])
    first = np.array([1 + 1j, -1 - 2j, 2 - 1j, -1 + 1j])
    # Step 2 flips the real part of components 0 and 1 and the imaginary part
    # of component 2, by less than the first moment holds: the step still
    # points along `first` there, against the new gradient.
    second = np.array([-0.1 + 1j, 0.1 - 2j, 2 + 0.1j, -1 + 1j])
    actual, _, _ = run(
        case.make(**no_decay),
        {"z": jnp.asarray(params, jnp.complex64)},
        [{"z": jnp.asarray(g, jnp.complex64)} for g in (first, second)],
    )
    expected = complex_reference_updates(case, params, [first, second], **no_decay)
    for got, wanted in zip(actual, expected, strict=True):
        assert_matches_reference(got["z"], wanted)
    parts = np.stack([np.real(actual[1]["z"]), np.imag(actual[1]["z"])])
    # Some parts dropped, some kept: the test is not vacuous.
    assert 0 < np.count_nonzero(parts == 0) < parts.size


# --- pytrees with empty nodes ------------------------------------------------


@parametrize_cases
def test_none_and_empty_subtrees(case: Case) -> None:
    """`None` leaves and empty subtrees survive init and update, and do
    not change the updates of the real leaves."""
    dense = make_params()
    params = {
        "w": dense["w"],
        "nothing": None,
        "empty_dict": {},
        "empty_tuple": (),
        "empty_list": [],
        "nested": {"b": dense["b"], "gone": None, "also_empty": {}},
    }
    dense_grads = make_grads({"w": dense["w"], "b": dense["b"]}, 3)
    grads = [
        {
            "w": g["w"],
            "nothing": None,
            "empty_dict": {},
            "empty_tuple": (),
            "empty_list": [],
            "nested": {"b": g["b"], "gone": None, "also_empty": {}},
        }
        for g in dense_grads
    ]
    opt = case.make()
    state = opt.init(params)
    expected, _, _ = run(opt, {"w": dense["w"], "b": dense["b"]}, dense_grads)
    for grad, expected_updates in zip(grads, expected, strict=True):
        updates, state = opt.update(grad, state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert updates["nothing"] is None and updates["empty_tuple"] == ()
        assert_trees_close(updates["w"], expected_updates["w"])
        assert_trees_close(updates["nested"]["b"], expected_updates["b"])
        params = optax.apply_updates(params, updates)
    memory = "prev_update" if "prev_update" in case.fields else "mu"
    assert jax.tree.structure(getattr(first_stage(state), memory)) == (
        jax.tree.structure(params)
    )


# --- the state ---------------------------------------------------------------


@parametrize_cases
def test_state_is_documented_named_tuple(case: Case) -> None:
    """The state is an `optax.chain` tuple whose first stage is the documented
    NamedTuple, with the documented fields and dtypes."""
    params = make_params()
    _, state, _ = run(case.make(), params, make_grads(params, 2))
    assert isinstance(state, tuple)
    core = first_stage(state)
    assert type(core) is case.state_type
    assert core._fields == case.fields
    params_structure = jax.tree.structure(params)
    if "prev_update" in case.fields:  # AAdam's memory (not C-AdamW's state)
        assert jax.tree.structure(core.prev_update) == params_structure
        assert jax.tree.structure(core.prev_grad_sign) == params_structure
        for sign in jax.tree.leaves(core.prev_grad_sign):
            assert sign.dtype == jnp.int8
            assert set(np.unique(np.asarray(sign))) <= {-1, 0, 1}
    moments = core.inner_state if case.state_type is ao.AccelerateState else core
    assert moments.count.dtype == jnp.int32 and int(moments.count) == 2
    assert jax.tree.structure(moments.mu) == params_structure
    assert jax.tree.structure(moments.nu) == params_structure


def test_inject_hyperparams_with_bfloat16_params_and_float32_hyperparams():
    """With bfloat16 params, `hyperparam_dtype=jnp.float32` (what the README
    advises: in bfloat16, b2 = 0.999 would round to 1) keeps the state's dtypes,
    bfloat16 params, and the plain optimizer's updates to bfloat16 rounding."""
    params = {"w": jnp.linspace(-1.0, 1.0, 8, dtype=jnp.bfloat16)}
    grads = {"w": jnp.linspace(0.5, -0.5, 8, dtype=jnp.bfloat16)}
    opt = optax.inject_hyperparams(ao.aadam, hyperparam_dtype=jnp.float32)(
        learning_rate=1e-2
    )
    plain = ao.aadam(1e-2)
    state, plain_state = opt.init(params), plain.init(params)
    step = jax.jit(opt.update)
    for _ in range(3):
        updates, new_state = step(grads, state, params)
        expected, plain_state = plain.update(grads, plain_state, params)
        # The float32 learning rate promotes the last stage's output, as it does
        # for optax.adam; apply_updates keeps the params' dtype.
        assert optax.apply_updates(params, updates)["w"].dtype == jnp.bfloat16
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(
            lambda x: x.dtype, state
        )
        # The float32 hyperparameters make the arithmetic float32 where the
        # plain optimizer's is bfloat16: equal up to a few bfloat16 roundings
        # (eps = 2**-8) accumulated over the steps.
        assert np.all(np.isfinite(np.asarray(updates["w"], np.float32)))
        np.testing.assert_allclose(
            np.asarray(updates["w"], np.float32),
            np.asarray(expected["w"], np.float32),
            rtol=2**-5,
        )
        state = new_state
