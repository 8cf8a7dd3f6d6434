"""AAdam and AAdamW: decoupled decay, bias correction, state dtypes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest

import aadam_optax

STEPS = 12
B1, B2, LR, WD = 0.8, 0.99, 0.05, 0.3


def tree_grads(seed: int, steps: int = STEPS) -> list[dict[str, np.ndarray]]:
    """Random gradients for params {"w": (3, 2), "b": (2,)}, some exactly 0."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        grads = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,))}
        grads["w"][rng.random((3, 2)) < 0.2] = 0.0
        out.append(grads)
    return out


def params_sequence(seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=(2,))} for _ in range(STEPS)
    ]


def run(
    optimizer: optax.GradientTransformation, grads: list, params: list
) -> tuple[list, list]:
    """Feeds gradients and params (both given, not optimised) step by step."""
    update = jax.jit(optimizer.update)
    state = optimizer.init(jax.tree.map(jnp.asarray, params[0]))
    updates, states = [], []
    for grad, theta in zip(grads, params, strict=True):
        u, state = update(
            jax.tree.map(jnp.asarray, grad), state, jax.tree.map(jnp.asarray, theta)
        )
        updates.append(jax.tree.map(np.asarray, u))
        states.append(state)
    return updates, states


@pytest.mark.parametrize(
    "mask",
    [
        {"w": True, "b": False},
        lambda params: jax.tree.map(lambda x: x.ndim > 1, params),
    ],
    ids=["tree", "callable"],
)
@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_aadamw_decays_only_where_masked(mask: Any, variant: str) -> None:
    """aadamw - aadam = -lr * wd * theta on "w", exactly 0 on "b"."""
    grads, params = tree_grads(0), params_sequence(1)
    with jax.enable_x64(True):
        decayed, decayed_states = run(
            aadam_optax.aadamw(LR, B1, B2, weight_decay=WD, mask=mask, variant=variant),
            grads,
            params,
        )
        plain, plain_states = run(
            aadam_optax.aadam(LR, B1, B2, variant=variant), grads, params
        )
    for n in range(STEPS):
        np.testing.assert_allclose(
            decayed[n]["w"] - plain[n]["w"],
            -LR * WD * params[n]["w"],
            rtol=1e-12,
            atol=1e-15,
        )
        np.testing.assert_array_equal(decayed[n]["b"], plain[n]["b"])
        # The decay is never accelerated: u_n is AAdam's, bit for bit.
        for key in ("w", "b"):
            np.testing.assert_array_equal(
                decayed_states[n][0].prev_update[key],
                plain_states[n][0].prev_update[key],
            )


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_aadamw_without_mask_decays_everything(variant: str) -> None:
    grads, params = tree_grads(2), params_sequence(3)
    with jax.enable_x64(True):
        decayed, _ = run(
            aadam_optax.aadamw(LR, B1, B2, weight_decay=WD, variant=variant),
            grads,
            params,
        )
        plain, _ = run(aadam_optax.aadam(LR, B1, B2, variant=variant), grads, params)
    for n in range(STEPS):
        for key in ("w", "b"):
            np.testing.assert_allclose(
                decayed[n][key] - plain[n][key],
                -LR * WD * params[n][key],
                rtol=1e-12,
                atol=1e-15,
            )


def test_zero_weight_decay_is_aadam() -> None:
    grads, params = tree_grads(4), params_sequence(5)
    with jax.enable_x64(True):
        decayed, _ = run(
            aadam_optax.aadamw(LR, B1, B2, weight_decay=0.0), grads, params
        )
        plain, _ = run(aadam_optax.aadam(LR, B1, B2), grads, params)
    for n in range(STEPS):
        for key in ("w", "b"):
            np.testing.assert_allclose(decayed[n][key], plain[n][key], rtol=1e-15)


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
def test_no_bias_correction_matches_reference(variant: str) -> None:
    """RMSprop with momentum, accelerated: a_n = m_n / (sqrt(v_n + eps_root) + eps)."""
    grads, params = tree_grads(6), params_sequence(7)
    config = ref.Config("adam", B1, B2, 1e-8, 1e-9, variant, bias_correction=False)
    with jax.enable_x64(True):
        updates, states = run(
            aadam_optax.aadam(
                LR, B1, B2, 1e-8, 1e-9, variant=variant, bias_correction=False
            ),
            grads,
            params,
        )
    for key in ("w", "b"):
        history = ref.run_directions(np.stack([g[key] for g in grads]), config)
        np.testing.assert_allclose(
            np.stack([u[key] for u in updates]),
            -LR * history.accelerated,
            rtol=1e-12,
            atol=1e-15,
        )
        np.testing.assert_allclose(states[-1][0].mu[key], history.state.mu, rtol=1e-12)
        np.testing.assert_allclose(states[-1][0].nu[key], history.state.nu, rtol=1e-12)
    # Without bias correction the first step is b1 (1 - b1) g / (sqrt((1 - b2)
    # g^2 + eps_root) + eps), far from Adam's b1 * sign(g): the flag is not a no-op.
    first = grads[0]["b"]
    expected_first = (
        -LR * B1 * (1 - B1) * first / (np.sqrt((1 - B2) * first**2 + 1e-9) + 1e-8)
    )
    np.testing.assert_allclose(updates[0]["b"], expected_first, rtol=1e-12)


OPTIMIZERS = {
    "aadam": lambda **kw: aadam_optax.aadam(LR, **kw),
    "aadamw": lambda **kw: aadam_optax.aadamw(LR, **kw),
    "aadamax": lambda **kw: aadam_optax.aadamax(LR, **kw),
    "aamsgrad": lambda **kw: aadam_optax.aamsgrad(LR, **kw),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    ("param_dtype", "mu_dtype", "prev_update_dtype"),
    [
        (jnp.float32, jnp.bfloat16, jnp.bfloat16),
        (jnp.float32, None, jnp.float16),
        (jnp.bfloat16, jnp.float32, jnp.float32),
    ],
)
def test_state_dtypes(
    name: str, param_dtype: Any, mu_dtype: Any, prev_update_dtype: Any
) -> None:
    """mu and prev_update take the asked dtypes and keep them; updates keep the
    params' dtype; nu (and nu_max) the params'; count int32; signs int8."""
    optimizer = OPTIMIZERS[name](mu_dtype=mu_dtype, prev_update_dtype=prev_update_dtype)
    params = {"w": jnp.ones((3, 2), param_dtype), "b": jnp.zeros((2,), param_dtype)}
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    rng = np.random.default_rng(8)
    for _ in range(3):
        grads = jax.tree.map(
            lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params
        )
        updates, state = update(grads, state, params)
        inner = state[0]
        assert inner.count.dtype == jnp.int32
        for key in params:
            assert updates[key].dtype == param_dtype
            assert np.all(np.isfinite(np.asarray(updates[key], np.float32)))
            assert inner.mu[key].dtype == (mu_dtype or param_dtype)
            assert inner.nu[key].dtype == param_dtype
            assert inner.prev_update[key].dtype == prev_update_dtype
            assert inner.prev_grad_sign[key].dtype == jnp.int8
            if hasattr(inner, "nu_max"):
                assert inner.nu_max[key].dtype == param_dtype
    assert int(state[0].count) == 3


def test_low_precision_prev_update_tracks_reference() -> None:
    """prev_update in bfloat16 only rounds u_{n-1}: the run stays close."""
    grads, params = tree_grads(9), params_sequence(10)
    grads32 = [jax.tree.map(lambda g: g.astype(np.float32), g) for g in grads]
    updates, _ = run(
        aadam_optax.aadam(LR, B1, B2, prev_update_dtype=jnp.bfloat16),
        grads32,
        params,
    )
    config = ref.Config("adam", B1, B2, 1e-8, 0.0, "sign_change")
    for key in ("w", "b"):
        history = ref.run_directions(np.stack([g[key] for g in grads32]), config)
        expected = -LR * history.accelerated
        np.testing.assert_allclose(
            np.stack([u[key] for u in updates]),
            expected,
            rtol=0,
            atol=2e-2 * np.abs(expected).max(),
        )


def test_low_precision_state_still_trains() -> None:
    """The 9-bytes-per-parameter option (bfloat16 mu and prev_update, float32
    nu, int8 signs) trains a least-squares fit as well as full precision."""
    key_a, key_w = jax.random.split(jax.random.PRNGKey(0))
    inputs = jax.random.normal(key_a, (64, 16))
    targets = inputs @ jax.random.normal(key_w, (16, 4))

    def loss(w: jax.Array) -> jax.Array:
        return jnp.mean((inputs @ w - targets) ** 2)

    def train(opt: optax.GradientTransformation) -> jax.Array:
        def step(carry, _):
            w, state = carry
            updates, state = opt.update(jax.grad(loss)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        w = jnp.zeros((16, 4))
        (w, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, length=3000))(
            (w, opt.init(w))
        )
        return loss(w)

    low = aadam_optax.aadam(1e-2, mu_dtype=jnp.bfloat16, prev_update_dtype=jnp.bfloat16)
    state = low.init(jnp.zeros((16, 4)))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim) / (16 * 4)
    assert state_bytes == 2 + 4 + 2 + 1
    initial = loss(jnp.zeros((16, 4)))
    full_loss, low_loss = train(aadam_optax.aadam(1e-2)), train(low)
    assert full_loss < 1e-8 * initial
    assert low_loss < 1e-7 * initial


def _float32_memory_pairs(variant: str) -> dict[str, tuple[Any, Any]]:
    """Each optimizer with a float32 `prev_update`, and the Optax transformation
    whose direction `a_n` it accelerates (the same moments, bit for bit)."""
    f32 = jnp.float32
    return {
        # bfloat16 moments: a_n in bfloat16, u_n in float32.
        "aadam": (
            aadam_optax.scale_by_aadam(B1, B2, variant=variant, prev_update_dtype=f32),
            optax.scale_by_adam(B1, B2),
        ),
        # float32 moments (the moment dtype is mu's): a_n in float32.
        "aadam_float32_mu": (
            aadam_optax.scale_by_aadam(
                B1, B2, mu_dtype=f32, variant=variant, prev_update_dtype=f32
            ),
            optax.scale_by_adam(B1, B2, mu_dtype=f32),
        ),
        "aadamax": (
            aadam_optax.scale_by_aadamax(
                B1, B2, variant=variant, prev_update_dtype=f32
            ),
            optax.scale_by_adamax(B1, B2),
        ),
        "aamsgrad": (
            aadam_optax.scale_by_aamsgrad(
                B1, B2, mu_dtype=f32, variant=variant, prev_update_dtype=f32
            ),
            optax.scale_by_amsgrad(B1, B2, mu_dtype=f32),
        ),
        "accelerate_adam": (
            aadam_optax.accelerate(
                optax.scale_by_adam(B1, B2, mu_dtype=f32),
                B1,
                variant=variant,
                prev_update_dtype=f32,
            ),
            optax.scale_by_adam(B1, B2, mu_dtype=f32),
        ),
    }


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
@pytest.mark.parametrize("name", list(_float32_memory_pairs("sign")))
def test_float32_memory_of_bfloat16_params_keeps_float32_precision(
    name: str, variant: str
) -> None:
    """bfloat16 params, `prev_update_dtype=float32`: u_n is computed and stored
    in float32, never rounded to bfloat16 (the params' dtype) on the way.

    u_1 = b1 a_1 is one float32 product, which bfloat16 cannot hold; after
    that u_n is the reference's rule applied to the same directions a_n, to
    float32 precision (bfloat16 would be off by ~4e-3).
    """
    ours, inner = _float32_memory_pairs(variant)[name]
    rng = np.random.default_rng(12)
    grads = rng.normal(size=(8, 6)) * 10.0 ** rng.uniform(-2, 1, size=6)
    grads[4, :2] = 0.0
    grads = np.asarray(jnp.asarray(grads, jnp.bfloat16), np.float64)
    state = ours.init(jnp.zeros(6, jnp.bfloat16))
    inner_state = inner.init(jnp.zeros(6, jnp.bfloat16))
    memory, directions = [], []
    # Eager, both: compiled, XLA may keep bfloat16 intermediates in float32
    # (excess precision), and two compiled programs need not round alike.
    for grad in jnp.asarray(grads, jnp.bfloat16):
        _, state = ours.update(grad, state)
        direction, inner_state = inner.update(grad, inner_state)
        assert state.prev_update.dtype == jnp.float32
        memory.append(np.asarray(state.prev_update))
        directions.append(np.asarray(direction, np.float32))  # exact
    memory_f32 = np.stack(memory)
    first = np.float32(B1) * directions[0]
    np.testing.assert_array_equal(memory_f32[0], first)
    assert np.all(first.astype(jnp.bfloat16).astype(np.float32) != first)
    expected = ref.accelerate_sequence(np.stack(directions), grads, B1, variant)
    np.testing.assert_allclose(
        memory_f32, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max()
    )
