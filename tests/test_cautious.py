"""The cautious mask: `cautious`, `scale_by_cautious`, `cautious_adamw` and
`cautious_aadamw` (docs/algorithms.md, "The cautious mask").

Expected values come from outside the package: the float64 NumPy reference
`cautious_reference.py` (the paper's equations, on top of `numpy_reference.py`
for Adam's and AAdam's directions), NAdam's look-ahead written out below, or
numbers worked out by hand in the test. The wrappers are checked by running the
unwrapped optimizer side by side from the same state and masking its update
with the reference. Optax pieces (`jit`, `vmap`, `inject_hyperparams`,
`MultiSteps`, `apply_if_finite`, clipping, schedules, the decay mask) are
checked against the reference applied to what the piece should hand the
optimizer.

Tolerances: float64 runs against the reference to rtol 1e-12 (atol 1e-15);
float32 trajectories to rtol 1e-5, atol 1e-8 (float32 rounds `1 - b2**n`,
Adam's bias correction); a float32 update against the reference mask of the
same float32 unwrapped update to rtol 1e-6; float16 and bfloat16 to 8 units of
the dtype's precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cautious_reference as cref
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest

import aadam_optax as ao

B1, B2, LR, WD = 0.9, 0.99, 0.05, 0.1
STEPS = 8
EPSILONS = [1.0, 1e-8, 0.0]
CONFIG = ref.Config(b1=B1, b2=B2)
F64 = {"rtol": 1e-12, "atol": 1e-15}
F32 = {"rtol": 1e-5, "atol": 1e-8}

Tree = dict[str, np.ndarray]


def fixed_direction(u: jnp.ndarray) -> optax.GradientTransformation:
    """An inner transformation whose update is always `u`."""
    return optax.GradientTransformation(lambda p: (), lambda g, s, p=None: (u, s))


def initial_params(seed: int = 0) -> Tree:
    """A matrix, a vector and a scalar leaf."""
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(size=(3, 4)),
        "b": rng.normal(size=(4,)),
        "s": np.asarray(rng.normal()),
    }


def tree_grads(seed: int = 1, steps: int = STEPS) -> list[Tree]:
    """Noisy gradients around a fixed mean: Adam's direction disagrees with the
    current gradient in some components at most steps, so the mask fires."""
    rng = np.random.default_rng(seed)
    mean = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,)), "s": 0.3}
    return [
        {k: np.asarray(m + 1.5 * rng.normal(size=np.shape(m))) for k, m in mean.items()}
        for _ in range(steps)
    ]


PARAMS = initial_params()
GRADS = tree_grads()


def as_jax(tree: Tree, dtype: Any) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v, dtype) for k, v in tree.items()}


def run(
    tx: optax.GradientTransformation,
    params: Tree,
    grads: Sequence[Tree],
    dtype: Any = jnp.float32,
    jit: bool = False,
    dtypes: list[Any] | None = None,
) -> tuple[list[Tree], Any]:
    """Applies `tx` step by step to given gradients; returns updates (float64).

    Eager by default: small eager steps reuse compiled primitives across tests;
    `jit` compiles the whole step once, cheaper for control-flow wrappers.
    The updates' own dtypes are appended to `dtypes` if given.
    """
    theta = as_jax(params, dtype)
    state = tx.init(theta)
    update = jax.jit(tx.update) if jit else tx.update
    out = []
    for grad in grads:
        updates, state = update(as_jax(grad, dtype), state, theta)
        theta = optax.apply_updates(theta, updates)
        out.append({k: np.asarray(v, np.float64) for k, v in updates.items()})
        if dtypes is not None:
            dtypes.extend(v.dtype for v in updates.values())
    return out, state


def assert_updates_close(
    actual: Sequence[Tree], expected: Sequence[Tree], **tolerance: float
) -> None:
    assert len(actual) == len(expected)
    for n, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert set(a) == set(e)
        for key in e:
            np.testing.assert_allclose(
                a[key], e[key], err_msg=f"step {n + 1}, leaf {key}", **tolerance
            )


def masked_fraction(
    steps: Sequence[Tree], grads: Sequence[Tree], descent: bool
) -> float:
    """The fraction of components, over a run, that do not point downhill
    (against the gradient for an update, along it for a direction): those the
    mask drops, or has dropped if `steps` are its output."""
    dropped = total = 0
    for step, grad in zip(steps, grads, strict=True):
        for key in grad:
            s, g = np.asarray(step[key]), np.asarray(grad[key])
            agree = np.sign(-s if descent else s) * np.sign(g) > 0
            dropped += int(np.sum(~agree))
            total += s.size
    return dropped / total


def make_decoupled(
    accelerated: bool, cautious_eps: float, **kwargs: Any
) -> optax.GradientTransformation:
    factory = ao.cautious_aadamw if accelerated else ao.cautious_adamw
    return factory(LR, B1, B2, weight_decay=WD, cautious_eps=cautious_eps, **kwargs)


# --- The two tests the module started with ----------------------------------


def test_cautious_zeroes_disagreeing_signs_and_rescales_by_the_kept_fraction():
    u = jnp.array([1.0, -2.0, 3.0, 4.0])
    g = jnp.array([1.0, 1.0, -1.0, 0.0])
    # Kept: only component 0 (u*g > 0; a zero gradient agrees with nothing).
    # Scale size / (kept + 1) = 4 / 2.
    out, _ = ao.scale_by_cautious(fixed_direction(u)).update(g, ())
    np.testing.assert_allclose(out, [2.0, 0.0, 0.0, 0.0])


def adam_direction(grads: list[np.ndarray], b1=0.9, b2=0.999, eps=1e-8):
    """Adam's bias-corrected direction after these gradients, from its equations."""
    m = v = 0.0
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
    t = len(grads)
    return (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)


def test_cautious_adamw_two_steps_by_hand():
    # Step 2's gradient flips sign where step 1's was larger, so Adam's
    # direction disagrees with it there: leaf "a" keeps 2 of 4 (scale 4/3),
    # leaf "b" keeps 1 of 1 (scale 1/2).
    g1 = {"a": np.array([1.0, -2.0, 0.5, 1.0]), "b": np.array([3.0])}
    g2 = {"a": np.array([-0.5, -1.0, 0.5, -0.5]), "b": np.array([1.0])}
    params = {"a": jnp.array([1.0, -2.0, 0.5, 0.25]), "b": jnp.array([-1.0])}
    lr, wd = 0.1, 0.01
    tx = ao.cautious_adamw(lr, weight_decay=wd)
    state = tx.init(params)
    for g in (g1, g2):
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    for leaf in ("a", "b"):
        u = adam_direction([g1[leaf], g2[leaf]])
        keep = (u * g2[leaf] > 0).astype(float)
        masked = u * keep * keep.size / (keep.sum() + 1)
        expected = -lr * (masked + wd * np.asarray(params[leaf]))
        # float32 rounds 1 - 0.999 by 1.3e-5 relative.
        np.testing.assert_allclose(updates[leaf], expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(updates["a"])[[0, 3]] != 0, [True, True])


# --- C-AdamW and C-AAdamW against the reference ---------------------------


@pytest.mark.parametrize("cautious_eps", EPSILONS)
@pytest.mark.parametrize("accelerated", [False, True], ids=["adamw", "aadamw"])
def test_decoupled_matches_the_reference_in_float64(
    accelerated: bool, cautious_eps: float
) -> None:
    with jax.enable_x64(True):
        updates, _ = run(
            make_decoupled(accelerated, cautious_eps), PARAMS, GRADS, jnp.float64
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = cref.decoupled_trajectory(
            PARAMS, GRADS, LR, WD, CONFIG, accelerated, cautious_eps
        )
    assert_updates_close(updates, expected, **F64)


@pytest.mark.parametrize("cautious_eps", [1.0, 0.0])
@pytest.mark.parametrize("accelerated", [False, True], ids=["adamw", "aadamw"])
def test_decoupled_matches_the_reference_in_float32(
    accelerated: bool, cautious_eps: float
) -> None:
    updates, _ = run(make_decoupled(accelerated, cautious_eps), PARAMS, GRADS)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = cref.decoupled_trajectory(
            PARAMS, GRADS, LR, WD, CONFIG, accelerated, cautious_eps
        )
    assert_updates_close(updates, expected, **F32)


@pytest.mark.parametrize("variant", ["sign", "magnitude"])
def test_cautious_aadamw_variants_match_the_reference(variant: ao.Variant) -> None:
    config = ref.Config(b1=B1, b2=B2, variant=variant)
    with jax.enable_x64(True):
        updates, _ = run(
            make_decoupled(True, 1.0, variant=variant), PARAMS, GRADS, jnp.float64
        )
    expected = cref.decoupled_trajectory(PARAMS, GRADS, LR, WD, config, True, 1.0)
    assert_updates_close(updates, expected, **F64)


def nesterov_trajectory(
    params: Tree, grads: Sequence[Tree], accelerated: bool, cautious_eps: float
) -> list[Tree]:
    """C-(A)AdamW on NAdam's direction, from docs/algorithms.md: the look-ahead
    `b1 m_n / (1 - b1^(n+1)) + (1 - b1) g_n / (1 - b1^n)` replaces `mhat_n`."""
    theta = {k: np.asarray(v, np.float64) for k, v in params.items()}
    zeros = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    mu, nu, prev_u, prev_sign = dict(zeros), dict(zeros), dict(zeros), dict(zeros)
    out = []
    for n, grad in enumerate(grads, start=1):
        updates = {}
        for k, g in grad.items():
            mu[k] = B1 * mu[k] + (1 - B1) * g
            nu[k] = B2 * nu[k] + (1 - B2) * g**2
            mhat = B1 * mu[k] / (1 - B1 ** (n + 1)) + (1 - B1) * g / (1 - B1**n)
            a = mhat / (np.sqrt(nu[k] / (1 - B2**n)) + 1e-8)
            step = a
            if accelerated:
                step = ref.accelerate_step(
                    a, np.sign(g), prev_sign[k], prev_u[k], B1, "sign_change"
                )
                prev_u[k], prev_sign[k] = step, np.sign(g)
            updates[k] = -LR * (cref.mask(step, g, cautious_eps) + WD * theta[k])
        theta = {k: theta[k] + updates[k] for k in theta}
        out.append(updates)
    return out


@pytest.mark.parametrize("accelerated", [False, True], ids=["adamw", "aadamw"])
def test_nesterov_masks_nadams_direction(accelerated: bool) -> None:
    with jax.enable_x64(True):
        updates, _ = run(
            make_decoupled(accelerated, 1e-8, nesterov=True),
            PARAMS,
            GRADS,
            jnp.float64,
        )
    expected = nesterov_trajectory(PARAMS, GRADS, accelerated, 1e-8)
    assert_updates_close(updates, expected, **F64)
    # NAdam's direction is not Adam's: the flag reached the direction.
    plain = cref.decoupled_trajectory(PARAMS, GRADS, LR, WD, CONFIG, accelerated, 1e-8)
    assert not np.allclose(updates[-1]["w"], plain[-1]["w"], rtol=1e-3)


# --- cautious(optimizer): the reference mask of the unwrapped update ---------

WRAPPED: dict[str, Callable[[], optax.GradientTransformation]] = {
    "adamw": lambda: optax.adamw(LR, b1=B1, b2=B2, weight_decay=WD),
    "aadam": lambda: ao.aadam(LR, B1, B2),
    "lion": lambda: optax.lion(LR, weight_decay=WD),
}


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("name", list(WRAPPED))
def test_cautious_is_the_reference_mask_of_the_unwrapped_update(
    name: str, eps: float
) -> None:
    inner = WRAPPED[name]()
    tx = ao.cautious(WRAPPED[name](), eps=eps)
    theta = as_jax(PARAMS, jnp.float32)
    state = tx.init(theta)
    plain_steps = []
    for n, grad in enumerate(GRADS, start=1):
        g = as_jax(grad, jnp.float32)
        plain, plain_state = inner.update(g, state, theta)
        masked, state = tx.update(g, state, theta)
        # The mask keeps no state: the wrapped state is the unwrapped one.
        assert jax.tree.structure(state) == jax.tree.structure(plain_state)
        for a, b in zip(
            jax.tree.leaves(state), jax.tree.leaves(plain_state), strict=True
        ):
            np.testing.assert_array_equal(a, b)
        for key in grad:
            with np.errstate(divide="ignore", invalid="ignore"):
                expected = cref.mask(
                    np.asarray(plain[key], np.float64),
                    np.asarray(g[key], np.float64),
                    eps,
                    descent=True,
                )
            np.testing.assert_allclose(
                masked[key], expected, rtol=1e-6, atol=0, err_msg=f"{n} {key}"
            )
        plain_steps.append({k: np.asarray(v) for k, v in plain.items()})
        theta = optax.apply_updates(theta, masked)
    # The mask did drop components (the check above would pass vacuously
    # if every component were kept and eps made the scale 1).
    assert masked_fraction(plain_steps, GRADS, descent=True) > 0.02


# --- Identities ------------------------------------------------------------


def test_cautious_sgd_keeps_every_component_and_scales_by_n_over_n_plus_1() -> None:
    # SGD's update -lr * g points against every nonzero gradient component.
    grads = [
        {k: v + np.sign(v) * 0.1 for k, v in g.items()} for g in GRADS[:3]
    ]  # no exact zeros
    updates, _ = run(ao.cautious(optax.sgd(0.1)), PARAMS, grads)
    for n, grad in enumerate(grads):
        for key, g in grad.items():
            numel = np.size(g)
            np.testing.assert_allclose(
                updates[n][key], -0.1 * g * numel / (numel + 1), rtol=1e-6
            )
    # The scalar leaf: 1 kept of 1, halved.
    np.testing.assert_allclose(updates[0]["s"], -0.1 * grads[0]["s"] / 2, rtol=1e-6)


@pytest.mark.parametrize("eps", [1.0, 0.0])
def test_scale_by_cautious_in_a_chain_equals_cautious_around_the_optimizer(
    eps: float,
) -> None:
    chained = optax.chain(
        ao.scale_by_cautious(optax.scale_by_adam(B1, B2), eps=eps),
        optax.scale_by_learning_rate(LR),
    )
    wrapped = ao.cautious(optax.adam(LR, B1, B2), eps=eps)
    a, _ = run(chained, PARAMS, GRADS)
    b, _ = run(wrapped, PARAMS, GRADS)
    assert_updates_close(a, b, rtol=1e-6, atol=0)
    assert masked_fraction(a, GRADS, descent=True) > 0.1


def test_cautious_adamw_without_decay_is_cautious_adam() -> None:
    a, state_a = run(ao.cautious_adamw(LR, B1, B2, weight_decay=0.0), PARAMS, GRADS)
    b, state_b = run(ao.cautious(optax.adam(LR, B1, B2)), PARAMS, GRADS)
    assert_updates_close(a, b, rtol=1e-6, atol=0)
    # The same Adam moments in both.
    for x, y in zip(
        jax.tree.leaves(state_a[0]), jax.tree.leaves(state_b[0]), strict=True
    ):
        np.testing.assert_array_equal(x, y)


def test_c_adamw_does_not_mask_the_decay_but_cautious_adamw_does() -> None:
    # Step 2 flips the first component's gradient to a small negative value:
    # Adam's direction keeps the sign of step 1's larger gradient, so the
    # component is masked. The second component keeps its sign.
    params = {"w": jnp.array([2.0, -1.0])}
    grads = [{"w": np.array([1.0, 1.0])}, {"w": np.array([-0.1, 1.0])}]
    lr, wd = 0.1, 0.05
    c_adamw, _ = run(ao.cautious_adamw(lr, weight_decay=wd), params, grads)
    masked_adamw, _ = run(ao.cautious(optax.adamw(lr, weight_decay=wd)), params, grads)
    plain, _ = run(optax.adamw(lr, weight_decay=wd), params, grads)
    # After step 1 (every component kept, scaled 2 / (2 + 1)):
    theta2 = np.asarray(params["w"]) + c_adamw[0]["w"]
    # C-AdamW: the masked component still decays, -lr * wd * theta.
    np.testing.assert_allclose(c_adamw[1]["w"][0], -lr * wd * theta2[0], rtol=1e-6)
    # cautious(adamw): the decay is part of the masked update, so it stops too.
    assert masked_adamw[1]["w"][0] == 0.0
    # Without the mask, AdamW's step there goes uphill (along the gradient).
    assert plain[1]["w"][0] < 0 and plain[1]["w"][0] * grads[1]["w"][0] > 0


def test_cautious_aadamw_memory_keeps_the_unmasked_direction() -> None:
    _, cautious_state = run(
        ao.cautious_aadamw(LR, B1, B2, weight_decay=WD), PARAMS, GRADS
    )
    _, plain_state = run(ao.aadamw(LR, B1, B2, weight_decay=WD), PARAMS, GRADS)
    # Same state type and layout as aadamw's, and the same AAdam memory: the
    # state does not depend on the params, which differ between the runs.
    assert jax.tree.structure(cautious_state) == jax.tree.structure(plain_state)
    for x, y in zip(
        jax.tree.leaves(cautious_state), jax.tree.leaves(plain_state), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    # ...and that memory is the reference's unmasked u_n.
    for key, shape_source in PARAMS.items():
        history = ref.run_directions(np.stack([g[key] for g in GRADS]), CONFIG)
        np.testing.assert_allclose(
            cautious_state[0].prev_update[key],
            history.accelerated[-1],
            rtol=1e-5,
            atol=1e-7,
        )
        assert np.shape(shape_source) == history.accelerated[-1].shape


# --- The mask fires on a real problem; its sign, by hand --------------------


def test_the_mask_fires_on_logistic_regression_and_changes_the_run() -> None:
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(64, 6)), jnp.float32)
    w_true = rng.normal(size=6)
    y = jnp.asarray(x @ w_true + 0.5 * rng.normal(size=64) > 0, jnp.float32)

    def loss(params: dict[str, jax.Array]) -> jax.Array:
        logits = x @ params["w"] + params["b"]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    def train(
        tx: optax.GradientTransformation,
        beside: optax.GradientTransformation | None = None,
    ) -> tuple[Any, list, list, list]:
        """20 steps of `tx`; `beside` is run from the same state at each step."""

        @jax.jit
        def step(params: Any, state: Any) -> Any:
            g = jax.grad(loss)(params)
            plain = g if beside is None else beside.update(g, state, params)[0]
            updates, state = tx.update(g, state, params)
            return optax.apply_updates(params, updates), state, updates, plain, g

        params = {"w": jnp.zeros(6), "b": jnp.zeros(())}
        state = tx.init(params)
        steps, plain_steps, grads = [], [], []
        for _ in range(20):
            params, state, updates, plain, g = step(params, state)
            steps.append(updates)
            plain_steps.append(plain)
            grads.append(g)
        return params, steps, plain_steps, grads

    start = float(loss({"w": jnp.zeros(6), "b": jnp.zeros(())}))
    cautious_params, steps, plain_steps, grads = train(
        ao.cautious_adamw(0.3, weight_decay=0.0), optax.adamw(0.3, weight_decay=0.0)
    )
    adam_params, _, _, _ = train(optax.adamw(0.3, weight_decay=0.0))
    zeroed = sum(int(np.sum(np.asarray(s["w"]) == 0.0)) for s in steps)
    assert zeroed > 0
    assert float(loss(cautious_params)) < 0.8 * start
    assert not np.allclose(cautious_params["w"], adam_params["w"], rtol=1e-3)
    # Each step is the reference mask of AdamW's step from the same state.
    for step, plain, g in zip(steps, plain_steps, grads, strict=True):
        for key in step:
            expected = cref.mask(np.asarray(plain[key]), np.asarray(g[key]), 1.0, True)
            np.testing.assert_allclose(step[key], expected, rtol=1e-6, atol=0)


# g1 = [1, -2, 3, 0.5], g2 = [-0.5, -1, -1, 2]; momentum trace t = g + 0.9 t:
# t1 = g1, t2 = [0.4, -2.8, 1.7, 2.45]. Step 1 keeps all four (t1 = g1).
# Step 2 keeps where t2 agrees in sign with g2: components 1 and 3.
HAND_G1 = np.array([1.0, -2.0, 3.0, 0.5])
HAND_G2 = np.array([-0.5, -1.0, -1.0, 2.0])
HAND_T2 = np.array([0.4, -2.8, 1.7, 2.45])


@pytest.mark.parametrize(
    ("eps", "scale1", "scale2"), [(1.0, 4 / 5, 4 / 3), (0.0, 1.0, 2.0)]
)
@pytest.mark.parametrize("form", ["cautious", "scale_by_cautious"])
def test_two_steps_by_hand(form: str, eps: float, scale1: float, scale2: float) -> None:
    if form == "cautious":
        tx = ao.cautious(optax.sgd(0.1, momentum=0.9), eps=eps)
    else:
        tx = optax.chain(
            ao.scale_by_cautious(optax.trace(decay=0.9), eps=eps),
            optax.scale_by_learning_rate(0.1),
        )
    params = {"p": np.zeros(4)}
    updates, _ = run(tx, params, [{"p": HAND_G1}, {"p": HAND_G2}])
    np.testing.assert_allclose(updates[0]["p"], -0.1 * HAND_G1 * scale1, rtol=1e-6)
    expected = -0.1 * HAND_T2 * np.array([0.0, 1.0, 0.0, 1.0]) * scale2
    np.testing.assert_allclose(updates[1]["p"], expected, rtol=1e-6, atol=0)
    # Keeping the other half would move components 0 and 2 instead.
    assert updates[1]["p"][0] == 0.0 and updates[1]["p"][2] == 0.0


# --- Edge cases --------------------------------------------------------------

EMPTY_CASES: dict[str, Callable[[], optax.GradientTransformation]] = {
    "cautious_adam": lambda: ao.cautious(optax.adam(LR)),
    "cautious_adamw": lambda: ao.cautious_adamw(LR, weight_decay=WD),
    "cautious_aadamw": lambda: ao.cautious_aadamw(LR, weight_decay=WD),
    "scale_by_cautious": lambda: optax.chain(
        ao.scale_by_cautious(optax.scale_by_adam()), optax.scale_by_learning_rate(LR)
    ),
}


@pytest.mark.parametrize("name", list(EMPTY_CASES))
def test_an_empty_leaf_stays_empty_and_changes_nothing_else(name: str) -> None:
    with_empty = {**PARAMS, "e": np.zeros((0,))}
    grads = [{**g, "e": np.zeros((0,))} for g in GRADS[:3]]
    updates, _ = run(EMPTY_CASES[name](), with_empty, grads)
    without, _ = run(EMPTY_CASES[name](), PARAMS, GRADS[:3])
    for n in range(3):
        assert updates[n]["e"].shape == (0,)
        for key in PARAMS:
            np.testing.assert_array_equal(updates[n][key], without[n][key])
    jitted = jax.jit(EMPTY_CASES[name]().update)
    theta = as_jax(with_empty, jnp.float32)
    out, _ = jitted(
        as_jax(grads[0], jnp.float32), EMPTY_CASES[name]().init(theta), theta
    )
    assert out["e"].shape == (0,) and out["e"].dtype == jnp.float32


@pytest.mark.parametrize("eps", [1.0, 0.0])
def test_an_all_masked_leaf_gets_a_zero_update(eps: float) -> None:
    # Momentum 0.9 outweighs the small flipped gradient in every component.
    params = {"all": np.array([1.0, -1.0, 2.0]), "some": np.array([1.0, 1.0])}
    grads = [
        {"all": np.array([1.0, -1.0, 1.0]), "some": np.array([1.0, 1.0])},
        {"all": np.array([-0.1, 0.1, -0.1]), "some": np.array([-0.1, 1.0])},
    ]
    updates, _ = run(ao.cautious(optax.sgd(0.1, momentum=0.9), eps=eps), params, grads)
    np.testing.assert_array_equal(updates[1]["all"], [0.0, 0.0, 0.0])
    assert np.all(np.isfinite(updates[1]["some"]))
    # C-AAdamW without decay: the same leaf stands still, finite.
    c_updates, _ = run(
        ao.cautious_aadamw(0.1, weight_decay=0.0, cautious_eps=eps), params, grads
    )
    np.testing.assert_array_equal(c_updates[1]["all"], [0.0, 0.0, 0.0])
    assert np.all(np.isfinite(c_updates[1]["some"]))


def test_a_zero_gradient_gives_only_the_decay() -> None:
    # Two real steps build up Adam's moments; then the gradient is 0
    # everywhere: nothing points downhill, so only the decay is left.
    grads = [*GRADS[:2], {k: np.zeros_like(v) for k, v in GRADS[0].items()}]
    c_adamw, _ = run(ao.cautious_adamw(LR, weight_decay=WD), PARAMS, grads)
    theta = {k: PARAMS[k] + c_adamw[0][k] + c_adamw[1][k] for k in PARAMS}
    for key in PARAMS:
        np.testing.assert_allclose(
            c_adamw[2][key], -LR * WD * theta[key], rtol=1e-6, atol=0
        )
    c_adam, _ = run(ao.cautious(optax.adam(LR)), PARAMS, grads)
    for key in PARAMS:
        np.testing.assert_array_equal(c_adam[2][key], np.zeros(np.shape(PARAMS[key])))
    # From the first step, too (Adam's direction is then 0 / eps = 0).
    first, _ = run(ao.cautious_aadamw(LR, weight_decay=WD), PARAMS, grads[2:])
    for key in PARAMS:
        np.testing.assert_allclose(first[0][key], -LR * WD * PARAMS[key], rtol=1e-6)


def test_a_nan_step_is_kept_and_a_nan_gradient_masks_a_finite_step() -> None:
    # By hand, for an update (kept where it points against the gradient):
    # component 0 is NaN (kept, so it propagates), 1 and 3 point downhill, 2
    # does not: 3 kept of 4, scale 4 / (3 + 1) = 1.
    u = jnp.array([jnp.nan, -1.0, 1.0, -2.0])
    out, _ = ao.cautious(fixed_direction(u)).update(jnp.ones(4), ())
    np.testing.assert_allclose(out, [np.nan, -1.0, 0.0, -2.0], rtol=0, atol=0)
    # A NaN gradient under a finite step has no sign to agree with: masked.
    g = jnp.array([jnp.nan, 1.0, 1.0, 1.0])
    out, _ = ao.cautious(fixed_direction(-jnp.ones(4)), eps=0.0).update(g, ())
    np.testing.assert_allclose(out, [0.0, -4 / 3, -4 / 3, -4 / 3], rtol=1e-6, atol=0)


def test_a_nan_gradient_propagates_through_cautious_adam() -> None:
    tx, inner = ao.cautious(optax.adam(LR)), optax.adam(LR)
    theta = as_jax(PARAMS, jnp.float32)
    state = tx.init(theta)
    _, state = tx.update(as_jax(GRADS[0], jnp.float32), state, theta)
    g = as_jax(GRADS[1], jnp.float32)
    g["w"] = g["w"].at[1, 2].set(jnp.nan)
    plain, _ = inner.update(g, state, theta)
    masked, _ = tx.update(g, state, theta)
    assert np.isnan(masked["w"][1, 2])
    assert np.sum(np.isnan(masked["w"])) == 1  # only there
    for key in PARAMS:
        expected = cref.mask(np.asarray(plain[key]), np.asarray(g[key]), descent=True)
        np.testing.assert_allclose(masked[key], expected, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
def test_half_precision_keeps_the_dtype_and_matches_the_reference(dtype: Any) -> None:
    # Gradients at least 0.5 in size, so Adam's direction is far from 0 and no
    # rounding can flip the mask.
    rng = np.random.default_rng(7)
    grads = [
        {
            "w": rng.choice([-1.0, 1.0], (3, 4)) * rng.uniform(0.5, 2.0, (3, 4)),
            "b": rng.choice([-1.0, 1.0], 4) * rng.uniform(0.5, 2.0, 4),
        }
        for _ in range(3)
    ]
    params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    # The reference sees the gradients and params as the half-precision run does.
    grads = [{k: np.asarray(as_jax(g, dtype)[k], np.float64) for k in g} for g in grads]
    params = {k: np.asarray(as_jax(params, dtype)[k], np.float64) for k in params}
    dtypes: list[Any] = []
    tx = ao.cautious_aadamw(0.1, B1, B2, weight_decay=WD)
    updates, state = run(tx, params, grads, dtype, jit=True, dtypes=dtypes)
    assert set(dtypes) == {jnp.dtype(dtype)}
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(state[0].mu))
    expected = cref.decoupled_trajectory(params, grads, 0.1, WD, CONFIG, True)
    # A few units of the dtype's precision, relative to the step's size.
    tolerance = 8 * float(jnp.finfo(dtype).eps)
    for n in range(3):
        for key in params:
            scale = np.max(np.abs(expected[n][key]))
            np.testing.assert_allclose(
                updates[n][key],
                expected[n][key],
                rtol=tolerance,
                atol=tolerance * scale,
            )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["f16", "bf16"])
def test_the_count_is_exact_for_a_large_half_precision_leaf(dtype: Any) -> None:
    # 70000 components, 66001 kept: a count in float16 overflows to inf past
    # 65504 and would scale every kept component to 0. (A count in bfloat16 is
    # only rounded, by less than a bfloat16 output can show.)
    size, kept = 70_000, 66_001
    u = jnp.asarray(np.linspace(0.5, 1.0, size), dtype)
    g = jnp.asarray(np.where(np.arange(size) < kept, 1.0, -1.0), dtype)
    out, _ = ao.scale_by_cautious(fixed_direction(u)).update(g, ())
    assert out.dtype == dtype
    expected = np.where(np.arange(size) < kept, np.asarray(u, np.float64), 0.0)
    expected = expected * size / (kept + 1.0)
    np.testing.assert_allclose(
        np.asarray(out, np.float64), expected, rtol=float(jnp.finfo(dtype).eps)
    )


def test_a_nan_in_one_complex_part_stays_in_that_part() -> None:
    # Each part is its own real number: a NaN or inf real part is kept (it
    # propagates) and must not turn the kept imaginary part into NaN. All 4
    # real components are kept, so the scale is 4 / (4 + 1).
    for bad in (np.nan, np.inf):
        u = jnp.array([complex(bad, 1.0), 1.0 + 1.0j], jnp.complex64)
        g = jnp.array([1.0 + 1.0j, 1.0 + 1.0j], jnp.complex64)
        out = np.asarray(ao.scale_by_cautious(fixed_direction(u)).update(g, ())[0])
        expected = cref.mask(np.asarray(u), np.asarray(g))
        np.testing.assert_allclose(out.real, expected.real, rtol=1e-6)
        np.testing.assert_allclose(out.imag, expected.imag, rtol=1e-6)
        np.testing.assert_allclose(out.imag, [0.8, 0.8], rtol=1e-6)


def test_an_all_masked_leaf_at_eps_zero_has_a_finite_gradient() -> None:
    # Nothing kept and eps = 0: numel / (0 + 0) must not reach the gradient
    # (d/ds of a masked component is 0), as meta-learning through the
    # optimizer would take it.
    def total(u: jax.Array) -> jax.Array:
        tx = ao.scale_by_cautious(fixed_direction(u), eps=0.0)
        return jnp.sum(tx.update(jnp.array([1.0, 1.0]), ())[0])

    np.testing.assert_array_equal(jax.grad(total)(jnp.array([-1.0, -2.0])), [0, 0])


def test_an_array_eps_is_refused_also_when_injected() -> None:
    with pytest.raises(ValueError, match=r"^eps must be a scalar"):
        ao.cautious(optax.sgd(1.0), eps=jnp.array([0.0, 3.0]))
    with pytest.raises(ValueError, match=r"^cautious_eps must be a scalar"):
        ao.cautious_adamw(0.1, cautious_eps=np.ones(3))
    # Traced under inject_hyperparams: the shape is still known.
    tx = optax.inject_hyperparams(ao.cautious_adamw)(0.1, cautious_eps=jnp.ones(2))
    params = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"^cautious_eps must be a scalar"):
        jax.jit(tx.update)(jnp.ones(2), tx.init(params), params)


def test_multisteps_inside_the_mask_is_refused() -> None:
    # The update of MultiSteps(sgd, 2) comes from the mean gradient but is
    # handed out with the last one; the other order is the right one.
    with pytest.raises(TypeError, match="optax.MultiSteps\\(cautious"):
        ao.cautious(optax.MultiSteps(optax.sgd(1.0), 2))
    with pytest.raises(TypeError, match="cannot wrap optax.MultiSteps"):
        ao.scale_by_cautious(optax.MultiSteps(optax.scale_by_adam(), 2))


def test_an_integer_leaf_is_refused_by_name() -> None:
    tx = ao.cautious(optax.sgd(1.0))
    params = {"steps": jnp.array([1, 2])}
    with pytest.raises(TypeError, match=r"\['steps'\] has dtype int32"):
        tx.update({"steps": jnp.array([1, -1])}, tx.init(params))


def test_complex_parts_are_masked_by_their_own_signs_by_hand() -> None:
    # Kept: the real part of component 0 only (1 of 4 real numbers), so the
    # scale is 4 / (1 + 1) = 2; counting complex numbers would give 2 / 2.
    u = jnp.array([1.0 + 1.0j, 2.0 - 1.0j], jnp.complex64)
    g = jnp.array([1.0 - 1.0j, -1.0 + 1.0j], jnp.complex64)
    out, _ = ao.scale_by_cautious(fixed_direction(u)).update(g, ())
    assert out.dtype == jnp.complex64
    np.testing.assert_array_equal(out, [2.0 + 0.0j, 0.0 + 0.0j])
    np.testing.assert_array_equal(out, cref.mask(np.asarray(u), np.asarray(g)))


@pytest.mark.parametrize("name", ["adam", "aadamw"])
def test_complex_params_match_the_reference_mask(name: str) -> None:
    rng = np.random.default_rng(11)
    shape = (3, 4)
    params = {"z": rng.normal(size=shape) + 1j * rng.normal(size=shape)}
    mean = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    grads = [
        {"z": mean + 1.5 * (rng.normal(size=shape) + 1j * rng.normal(size=shape))}
        for _ in range(5)
    ]
    if name == "adam":
        inner, tx = optax.adam(LR), ao.cautious(optax.adam(LR))
    else:
        # Without decay, C-AAdamW's update is the masked update of AAdamW's.
        inner = ao.aadamw(LR, weight_decay=0.0)
        tx = ao.cautious_aadamw(LR, weight_decay=0.0)
    theta = as_jax(params, jnp.complex64)
    state = tx.init(theta)
    real_only = imag_only = False
    for grad in grads:
        g = as_jax(grad, jnp.complex64)
        plain, _ = inner.update(g, state, theta)
        masked, state = tx.update(g, state, theta)
        assert masked["z"].dtype == jnp.complex64
        expected = cref.mask(np.asarray(plain["z"]), np.asarray(g["z"]), descent=True)
        np.testing.assert_allclose(masked["z"], expected, rtol=1e-6, atol=1e-9)
        z = np.asarray(masked["z"])
        imag_only |= bool(np.any((z.real == 0) & (z.imag != 0)))
        real_only |= bool(np.any((z.imag == 0) & (z.real != 0)))
        theta = optax.apply_updates(theta, masked)
    # Some real part and some imaginary part were dropped on their own.
    assert real_only and imag_only


def test_python_scalars_work_as_optax_adams_scalar_path() -> None:
    # aadam's first direction is b1 * sign(g) = 0.9; kept, scaled 1 / (1 + 1).
    tx = ao.cautious(ao.aadam(1e-3))
    update, _ = tx.update(0.5, tx.init(1.0))
    assert jnp.shape(update) == () and update.dtype == jnp.float32
    np.testing.assert_allclose(update, -1e-3 * 0.9 / 2, rtol=1e-5)
    plain, _ = optax.adam(1e-3).update(0.5, optax.adam(1e-3).init(1.0))
    tx = ao.cautious(optax.adam(1e-3))
    update, _ = tx.update(0.5, tx.init(1.0))
    np.testing.assert_allclose(update, np.asarray(plain) / 2, rtol=1e-6)
    tx = ao.cautious_adamw(1e-3, weight_decay=0.1)
    update, _ = tx.update(0.5, tx.init(1.0), 1.0)
    np.testing.assert_allclose(update, -1e-3 * (1.0 / 2 + 0.1 * 1.0), rtol=1e-5)


# --- Optax machinery ---------------------------------------------------------


def test_jit_compiles_once_and_matches_eager() -> None:
    tx = ao.cautious_aadamw(LR, B1, B2, weight_decay=WD)
    traces = 0

    def step(g: Any, state: Any, params: Any) -> Any:
        nonlocal traces
        traces += 1
        return tx.update(g, state, params)

    jitted = jax.jit(step)
    theta = as_jax(PARAMS, jnp.float32)
    state = tx.init(theta)
    out = []
    for grad in GRADS:
        updates, state = jitted(as_jax(grad, jnp.float32), state, theta)
        theta = optax.apply_updates(theta, updates)
        out.append({k: np.asarray(v, np.float64) for k, v in updates.items()})
    assert traces == 1
    eager, _ = run(tx, PARAMS, GRADS)
    # Fused and unfused float32 arithmetic round differently.
    assert_updates_close(out, eager, rtol=1e-5, atol=1e-8)


def test_vmap_masks_each_instance_with_its_own_count() -> None:
    tx = ao.cautious(optax.sgd(0.1, momentum=0.9))
    rng = np.random.default_rng(5)
    batch = 4
    params = {"w": jnp.asarray(rng.normal(size=(batch, 6)), jnp.float32)}
    grads = [
        {"w": jnp.asarray(rng.normal(size=(batch, 6)), jnp.float32)} for _ in range(3)
    ]
    state = jax.vmap(tx.init)(params)
    singles = [tx.init({"w": params["w"][i]}) for i in range(batch)]
    kept_counts = set()
    for g in grads:
        plain, _ = jax.vmap(optax.sgd(0.1, momentum=0.9).update)(g, state, params)
        out, state = jax.vmap(tx.update)(g, state, params)
        for i in range(batch):
            single, singles[i] = tx.update({"w": g["w"][i]}, singles[i])
            np.testing.assert_allclose(out["w"][i], single["w"], rtol=1e-6, atol=0)
            expected = cref.mask(
                np.asarray(plain["w"][i]), np.asarray(g["w"][i]), descent=True
            )
            np.testing.assert_allclose(out["w"][i], expected, rtol=1e-6, atol=0)
            kept_counts.add(int(np.sum(np.asarray(out["w"][i]) != 0)))
    # The instances kept different numbers of components, so a count over the
    # whole batch would have scaled them differently.
    assert len(kept_counts) > 1


def test_inject_hyperparams_matches_and_a_change_takes_effect() -> None:
    tx = optax.inject_hyperparams(ao.cautious_adamw)(
        learning_rate=LR, b2=B2, weight_decay=WD, cautious_eps=1.0
    )
    plain = ao.cautious_adamw(LR, b2=B2, weight_decay=WD, cautious_eps=1.0)
    theta = as_jax(PARAMS, jnp.float32)
    state, plain_state = tx.init(theta), plain.init(theta)
    assert set(state.hyperparams) >= {"learning_rate", "weight_decay", "cautious_eps"}
    for grad in GRADS[:3]:
        g = as_jax(grad, jnp.float32)
        updates, state = tx.update(g, state, theta)
        expected, plain_state = plain.update(g, plain_state, theta)
        for key in PARAMS:
            # The injected b2 is a float32 array, the plain one a Python float.
            np.testing.assert_allclose(
                updates[key], expected[key], rtol=1e-5, atol=1e-8
            )
        theta = optax.apply_updates(theta, updates)
    state.hyperparams["learning_rate"] = jnp.asarray(0.01)
    state.hyperparams["weight_decay"] = jnp.asarray(0.5)
    state.hyperparams["cautious_eps"] = jnp.asarray(0.0)
    g = as_jax(GRADS[3], jnp.float32)
    updates, _ = tx.update(g, state, theta)
    changed = ao.cautious_adamw(0.01, b2=B2, weight_decay=0.5, cautious_eps=0.0)
    expected, _ = changed.update(g, plain_state, theta)
    unchanged, _ = plain.update(g, plain_state, theta)
    for key in PARAMS:
        np.testing.assert_allclose(updates[key], expected[key], rtol=1e-5, atol=1e-8)
    assert not np.allclose(updates["w"], unchanged["w"], rtol=1e-3)


def test_inject_hyperparams_with_a_complex_param_keeps_real_leaves_real() -> None:
    # inject_hyperparams casts cautious_eps (and every other hyperparameter) to
    # complex64 here; the mask must read its real part.
    params = {
        "z": jnp.array([1 + 1j, 2 - 1j], jnp.complex64),
        "r": jnp.array([1.0, 2.0]),
    }
    grads = {
        "z": jnp.array([1 - 1j, -1 + 1j], jnp.complex64),
        "r": jnp.array([1.0, -2.0]),
    }
    tx = optax.inject_hyperparams(ao.cautious_aadamw)(
        learning_rate=0.1, weight_decay=0.1, cautious_eps=1.0
    )
    state = tx.init(params)
    assert state.hyperparams["cautious_eps"].dtype == jnp.complex64
    updates, _ = tx.update(grads, state, params)
    assert updates["r"].dtype == jnp.float32
    assert updates["z"].dtype == jnp.complex64
    # AAdam's first direction is b1 * g / |g| (for a complex g, |g| is the
    # modulus, as Adam's v is |g|^2), every part kept: "r" scaled by
    # 2 / (2 + 1), "z" by 4 / (4 + 1).
    np.testing.assert_allclose(
        updates["r"],
        -0.1 * (0.9 * np.array([1, -1]) * 2 / 3 + 0.1 * params["r"]),
        rtol=1e-5,
    )
    z_dir = 0.9 * np.array([1 - 1j, -1 + 1j]) / np.sqrt(2) * 4 / 5
    np.testing.assert_allclose(
        updates["z"], -0.1 * (z_dir + 0.1 * np.asarray(params["z"])), rtol=1e-5
    )


def test_multisteps_applies_the_mean_gradient() -> None:
    k = 3
    tx = optax.MultiSteps(ao.cautious_adamw(LR, B1, B2, weight_decay=WD), k)
    grads = GRADS[: 2 * k]
    updates, _ = run(tx, PARAMS, grads, jit=True)
    means = [
        {key: np.mean([g[key] for g in grads[i : i + k]], axis=0) for key in PARAMS}
        for i in range(0, 2 * k, k)
    ]
    expected = cref.decoupled_trajectory(PARAMS, means, LR, WD, CONFIG, False)
    for block in range(2):
        for i in range(k - 1):
            for key in PARAMS:
                assert not np.any(updates[block * k + i][key])
    assert_updates_close([updates[k - 1], updates[2 * k - 1]], expected, **F32)


def test_apply_if_finite_skips_a_nan_step() -> None:
    tx = optax.apply_if_finite(ao.cautious_adamw(LR, B1, B2, weight_decay=WD), 3)
    bad = {k: np.asarray(v).copy() for k, v in GRADS[1].items()}
    bad["w"][0, 0] = np.nan
    grads = [GRADS[0], bad, GRADS[2], GRADS[3]]
    updates, state = run(tx, PARAMS, grads, jit=True)
    for key in PARAMS:
        assert not np.any(updates[1][key])
    assert int(state.total_notfinite) == 1
    expected = cref.decoupled_trajectory(
        PARAMS, [GRADS[0], GRADS[2], GRADS[3]], LR, WD, CONFIG, False
    )
    assert_updates_close([updates[0], updates[2], updates[3]], expected, **F32)


def test_chain_with_clipping_masks_against_the_clipped_gradient() -> None:
    max_norm = 2.0
    tx = optax.chain(
        optax.clip_by_global_norm(max_norm),
        ao.cautious_aadamw(LR, B1, B2, weight_decay=WD),
    )
    updates, _ = run(tx, PARAMS, GRADS)
    clipped = []
    for g in GRADS:
        norm = np.sqrt(sum(np.sum(v**2) for v in g.values()))
        assert norm > max_norm  # the clip is active
        clipped.append({k: v * max_norm / norm for k, v in g.items()})
    expected = cref.decoupled_trajectory(PARAMS, clipped, LR, WD, CONFIG, True)
    assert_updates_close(updates, expected, **F32)


def test_schedules_for_learning_rate_and_weight_decay() -> None:
    def lr(count: Any) -> Any:
        return 0.1 * 0.8**count

    def wd(count: Any) -> Any:
        return 0.05 * (1 + count)

    updates, _ = run(
        ao.cautious_aadamw(lr, B1, B2, weight_decay=wd, cautious_eps=0.0),
        PARAMS,
        GRADS,
    )
    # With lr = 1 and no decay, the reference gives -s~_n, which does not
    # depend on the params; the schedules and the decay are applied here.
    directions = cref.decoupled_trajectory(PARAMS, GRADS, 1.0, 0.0, CONFIG, True, 0.0)
    theta = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
    expected = []
    for n, direction in enumerate(directions):
        step = {k: lr(n) * (direction[k] - wd(n) * theta[k]) for k in theta}
        theta = {k: theta[k] + step[k] for k in theta}
        expected.append(step)
    assert_updates_close(updates, expected, **F32)


@pytest.mark.parametrize(
    "mask",
    [
        {"w": True, "b": False, "s": False},
        lambda params: {k: jnp.ndim(v) == 2 for k, v in params.items()},
    ],
    ids=["tree", "callable"],
)
def test_the_decay_mask(mask: Any) -> None:
    updates, _ = run(
        ao.cautious_adamw(LR, B1, B2, weight_decay=WD, mask=mask), PARAMS, GRADS
    )
    directions = cref.decoupled_trajectory(PARAMS, GRADS, 1.0, 0.0, CONFIG, False)
    theta = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
    expected = []
    for direction in directions:
        step = {
            k: LR * (direction[k] - (WD * theta[k] if k == "w" else 0.0)) for k in theta
        }
        theta = {k: theta[k] + step[k] for k in theta}
        expected.append(step)
    assert_updates_close(updates, expected, **F32)


# --- Validation --------------------------------------------------------------

BAD_EPSILONS = [
    (-1.0, ValueError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    ("1.0", TypeError),
    (True, TypeError),
]


@pytest.mark.parametrize(("bad", "error"), BAD_EPSILONS)
def test_a_bad_eps_is_refused_by_name(bad: Any, error: type) -> None:
    with pytest.raises(error, match=r"^eps\b"):
        ao.cautious(optax.adam(0.1), eps=bad)
    with pytest.raises(error, match=r"^eps\b"):
        ao.scale_by_cautious(optax.scale_by_adam(), eps=bad)


@pytest.mark.parametrize(("bad", "error"), BAD_EPSILONS)
@pytest.mark.parametrize("factory", [ao.cautious_adamw, ao.cautious_aadamw])
def test_a_bad_cautious_eps_is_refused_by_name(
    factory: Callable[..., Any], bad: Any, error: type
) -> None:
    with pytest.raises(error, match=r"^cautious_eps\b"):
        factory(0.1, cautious_eps=bad)


def test_a_factory_instead_of_a_transformation_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"^optimizer\b.*not the function"):
        ao.cautious(optax.adam)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^optimizer\b"):
        ao.cautious(ao.aadam)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^inner\b"):
        ao.scale_by_cautious(optax.scale_by_adam)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"b1": 1.0}, "b1"),
        ({"b1": -0.1}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"b2": -0.5}, "b2"),
        ({"eps": -1e-8}, "eps"),
        ({"learning_rate": -0.1}, "learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
@pytest.mark.parametrize("factory", [ao.cautious_adamw, ao.cautious_aadamw])
def test_out_of_range_hyperparameters_are_refused_by_name(
    factory: Callable[..., Any], kwargs: dict[str, float], name: str
) -> None:
    arguments = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        factory(**arguments)


def test_b1_zero_is_adams_business_not_aadams() -> None:
    # docs/deviations.md: cautious_adamw takes optax.adamw's b1 range, [0, 1)
    # (RMSprop's direction); AAdam's acceleration needs b1 in (0, 1).
    updates, _ = run(ao.cautious_adamw(0.1, b1=0.0), PARAMS, GRADS[:2])
    assert np.any(updates[1]["w"])
    with pytest.raises(ValueError, match=r"^b1\b"):
        ao.cautious_aadamw(0.1, b1=0.0)


def test_the_signatures_extend_adamw_and_aadamw() -> None:
    # Drop-in: optax.adamw's (and aadamw's) arguments in the same order, then
    # cautious_eps, keyword-only.
    import inspect

    def names(f: Callable[..., Any]) -> list[str]:
        return list(inspect.signature(f).parameters)

    assert names(ao.cautious_adamw) == [*names(optax.adamw), "cautious_eps"]
    assert names(ao.cautious_aadamw) == [*names(ao.aadamw), "cautious_eps"]
    kind = inspect.signature(ao.cautious_adamw).parameters["cautious_eps"].kind
    assert kind is inspect.Parameter.KEYWORD_ONLY
    # Positionally, as optax.adamw is called.
    a, _ = run(
        ao.cautious_adamw(LR, 0.8, 0.95, 1e-6, 0.0, None, 0.2), PARAMS, GRADS[:2]
    )
    b, _ = run(
        ao.cautious_adamw(
            LR, b1=0.8, b2=0.95, eps=1e-6, eps_root=0.0, weight_decay=0.2
        ),
        PARAMS,
        GRADS[:2],
    )
    assert_updates_close(a, b, rtol=0, atol=0)
