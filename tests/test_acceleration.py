"""Identities of the acceleration rule, derived from docs/algorithms.md.

Each test states an identity that follows from `u_n = b1 a_n + (1 - b1) c_n
u_{n-1}` and checks the package against it, with optax's own transformations as
the source of `a_n`. Runs are short and eager (a Python loop of `update` calls):
compiling a scan per case would cost more than running it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import optax
import pytest

import aadam_optax

VARIANTS = aadam_optax.VARIANTS
STEPS = 30
SHAPE = (7,)
B1, B2 = 0.8, 0.99


def random_grads(seed: int, steps: int = STEPS, shape: tuple = SHAPE) -> np.ndarray:
    """Gradients of mixed scale and random sign, some exactly 0."""
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(steps, *shape)) * 10.0 ** rng.uniform(-3, 2, size=shape)
    grads[rng.random(grads.shape) < 0.1] = 0.0
    return grads


def run(transform: optax.GradientTransformation, grads: Any) -> tuple[np.ndarray, Any]:
    """Feeds `grads` (axis 0 is the step) through `transform`; returns updates."""
    state = transform.init(jnp.zeros_like(grads[0]))
    updates = []
    for grad in grads:
        update, state = transform.update(grad, state)
        updates.append(update)
    return np.stack([np.asarray(u) for u in updates]), state


@pytest.mark.parametrize("variant", VARIANTS)
def test_first_step_is_b1_times_adam(variant: str) -> None:
    """sign(g_0) := 0 and u_0 = 0, so u_1 = b1 * a_1 for every variant."""
    grad = jnp.asarray(random_grads(0, steps=1))
    accelerated, _ = run(aadam_optax.scale_by_aadam(B1, B2, variant=variant), grad)
    adam, _ = run(optax.scale_by_adam(B1, B2), grad)
    np.testing.assert_allclose(accelerated, B1 * adam, rtol=1e-6, atol=1e-7)


def alternating_zero_grads(seed: int) -> np.ndarray:
    """Component i is exactly 0 on the steps n with n + i even (n from 1)."""
    grads = random_grads(seed)
    steps = np.arange(1, STEPS + 1)[:, None]
    components = np.arange(SHAPE[0])[None, :]
    grads[(steps + components) % 2 == 0] = 0.0
    grads[(steps + components) % 2 == 1] += 0.5  # nonzero where not zeroed
    return grads


@pytest.mark.parametrize("variant", ["sign_change", "magnitude"])
def test_no_acceleration_when_every_other_gradient_is_zero(variant: str) -> None:
    """c_n = sign(g_n) sign(g_{n-1}) = 0 at every step: AAdam is b1 x Adam.

    From step 2 on, Adam's direction is not 0 on the zero-gradient steps (its
    momentum still moves), so this covers those steps too.
    """
    with jax.enable_x64(True):
        grads = jnp.asarray(alternating_zero_grads(1))
        accelerated, _ = run(aadam_optax.scale_by_aadam(B1, B2, variant=variant), grads)
        adam, _ = run(optax.scale_by_adam(B1, B2), grads)
    assert np.all(adam[1:] != 0)
    np.testing.assert_allclose(accelerated, B1 * adam, rtol=1e-13, atol=0)


def test_sign_variant_with_every_other_gradient_zero() -> None:
    """For c_n = sign(g_n): u_n = b1 a_n where g_n = 0, and where g_n != 0 (so
    g_{n-1} = 0 and u_{n-1} = b1 a_{n-1}): u_n = b1 (a_n + (1-b1) sign(g_n) a_{n-1}).
    """
    with jax.enable_x64(True):
        grads_np = alternating_zero_grads(2)
        grads = jnp.asarray(grads_np)
        accelerated, _ = run(aadam_optax.scale_by_aadam(B1, B2, variant="sign"), grads)
        adam, _ = run(optax.scale_by_adam(B1, B2), grads)
    previous = np.concatenate([np.zeros((1, *SHAPE)), adam[:-1]])
    expected = B1 * (adam + (1 - B1) * np.sign(grads_np) * previous)
    np.testing.assert_allclose(accelerated, expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seed", [3, 4])
def test_step_bounds(variant: str, seed: int) -> None:
    """|u_n| <= b1 |a_n| + (1 - b1) |u_{n-1}| <= max_{k<=n} |a_k|."""
    with jax.enable_x64(True):
        grads = jnp.asarray(random_grads(seed))
        accelerated, _ = run(aadam_optax.scale_by_aadam(B1, B2, variant=variant), grads)
        adam, _ = run(optax.scale_by_adam(B1, B2), grads)
    previous = np.concatenate([np.zeros((1, *SHAPE)), accelerated[:-1]])
    slack = 1 + 1e-12
    sharp = B1 * np.abs(adam) + (1 - B1) * np.abs(previous)
    assert np.all(np.abs(accelerated) <= sharp * slack)
    running_max = np.maximum.accumulate(np.abs(adam), axis=0)
    assert np.all(np.abs(accelerated) <= running_max * slack)
    # The bounds are not vacuous: the memory term is used somewhere.
    assert np.any(np.abs(accelerated - B1 * adam) > 1e-3 * running_max)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_scale_invariance(variant: str) -> None:
    """eps = eps_root = 0: scaling every gradient by k > 0 leaves u_n unchanged.

    For k a power of two every operation (products, sums, sqrt, division)
    commutes exactly with the scaling, so the updates are bitwise equal.
    """
    grads = random_grads(5)
    with jax.enable_x64(True):
        transform = aadam_optax.scale_by_aadam(B1, B2, 0.0, 0.0, variant=variant)
        base, _ = run(transform, jnp.asarray(grads))
        for k in (2.0**-10, 2.0**7):
            scaled, _ = run(transform, jnp.asarray(grads * k))
            np.testing.assert_array_equal(scaled, base)
        for k in (3.7, 1e-3, 1e4):
            scaled, _ = run(transform, jnp.asarray(grads * k))
            np.testing.assert_allclose(
                scaled, base, rtol=1e-10, atol=1e-12 * np.abs(base).max()
            )


def _pairs(variant: str) -> dict[str, tuple[Any, Any]]:
    lr = 0.03
    return {
        "adam": (
            optax.chain(
                aadam_optax.accelerate(
                    optax.scale_by_adam(B1, B2), B1, variant=variant
                ),
                optax.scale_by_learning_rate(lr),
            ),
            aadam_optax.aadam(lr, B1, B2, variant=variant),
        ),
        "amsgrad": (
            optax.chain(
                aadam_optax.accelerate(
                    optax.scale_by_amsgrad(B1, B2), B1, variant=variant
                ),
                optax.scale_by_learning_rate(lr),
            ),
            aadam_optax.aamsgrad(lr, B1, B2, variant=variant),
        ),
        "adamax": (
            optax.chain(
                aadam_optax.accelerate(
                    optax.scale_by_adamax(B1, B2), B1, variant=variant
                ),
                optax.scale_by_learning_rate(lr),
            ),
            aadam_optax.aadamax(lr, B1, B2, variant=variant),
        ),
    }


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("family", ["adam", "amsgrad", "adamax"])
def test_accelerate_of_optax_direction_equals_alias(family: str, variant: str) -> None:
    grads = random_grads(6)
    grads[grads == 0] = 1.5  # AdaMax with eps = 0 divides by max |g|
    with jax.enable_x64(True):
        generic, alias = _pairs(variant)[family]
        expected, _ = run(alias, jnp.asarray(grads))
        actual, _ = run(generic, jnp.asarray(grads))
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_complex_params_are_accelerated_as_two_reals(variant: str) -> None:
    """Re and Im each follow the real rule, driven by their own gradient signs.

    Adam's complex direction mixes the parts (its second moment is |g|^2), so
    the expectation takes optax's complex Adam direction and applies the real
    reference rule to its real and imaginary parts separately.
    """
    real, imag = random_grads(7), random_grads(8)
    imag[3] = 0.0  # a step whose imaginary part is exactly 0
    with jax.enable_x64(True):
        grads = jnp.asarray(real + 1j * imag)
        adam, _ = run(optax.scale_by_adam(B1, B2), grads)
        generic, state = run(
            aadam_optax.accelerate(optax.scale_by_adam(B1, B2), B1, variant=variant),
            grads,
        )
        own, _ = run(aadam_optax.scale_by_aadam(B1, B2, variant=variant), grads)
    expected = ref.accelerate_sequence(
        adam.real, real, B1, variant
    ) + 1j * ref.accelerate_sequence(adam.imag, imag, B1, variant)
    for actual in (generic, own):
        assert actual.dtype == np.complex128
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)
    # The two sign histories, packed as re + 3 * im.
    np.testing.assert_array_equal(
        state.prev_grad_sign, np.sign(real[-1]) + 3 * np.sign(imag[-1])
    )


@pytest.mark.parametrize("field", ["mu", "prev_update"])
def test_complex_params_keep_complex_state_with_a_real_state_dtype(field: str):
    # A real storage dtype is promoted to its complex counterpart: dropping the
    # imaginary part of m_n or u_{n-1} would silently change the rule.
    params = jnp.array([1.0 + 2.0j, -0.5 + 0.25j], jnp.complex64)
    default = aadam_optax.aadam(0.1)
    asked_real = aadam_optax.aadam(0.1, **{f"{field}_dtype": jnp.float32})
    state_default, state_real = default.init(params), asked_real.init(params)
    assert getattr(state_real[0], field).dtype == jnp.complex64
    grads = [params, params * 0.5, -params, params * (1 + 1j)]
    for grad in grads:
        expected, state_default = default.update(grad, state_default)
        got, state_real = asked_real.update(grad, state_real)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    assert np.any(np.imag(np.asarray(getattr(state_real[0], field))) != 0)


@pytest.mark.parametrize("variant", aadam_optax.VARIANTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_donated_training_step_compiles_without_buffer_copies(variant, dtype):
    """Under donation every state buffer is updated in place: the compiled step
    holds no copy of a parameter-sized array (the new signs used to be computed
    before the old ones were read, which cost two full int8 copies)."""
    params = {"w": jnp.ones((4096,), dtype), "b": jnp.ones((64,), dtype)}
    opt = aadam_optax.aadam(1e-3, variant=variant)

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, opt.init(params), params)
        .compile()
    )
    entry = compiled.as_text().split("ENTRY", 1)[1]
    copies = [line for line in entry.splitlines() if " copy(" in line]
    assert not [line for line in copies if "[4096]" in line or "[64]" in line], copies


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_export_for_an_accelerator_carries_no_cpu_ordering(platform: str) -> None:
    """The CPU-only ordering of the sign after the update is chosen where the
    step is lowered: a step exported for GPU or TPU from this CPU host has no
    more operations than Optax's Adam has beyond the sign itself (no slice of
    the update, no min(|u|, 0)), while one exported for CPU keeps it."""
    params = {"w": jnp.zeros((4, 3))}
    grads = {"w": jnp.ones((4, 3))}

    def exported(tx: optax.GradientTransformation, target: str) -> str:
        step = jax.jit(lambda g, s, p: tx.update(g, s, p))
        module = jax.export.export(step, platforms=[target])(
            grads, tx.init(params), params
        )
        return module.mlir_module()

    aadam_text = exported(aadam_optax.aadam(0.1), platform)
    adam_text = exported(optax.adam(0.1), platform)
    for op in ("stablehlo.slice", "stablehlo.minimum"):
        assert aadam_text.count(op) == adam_text.count(op), op
    cpu_text = exported(aadam_optax.aadam(0.1), "cpu")
    assert cpu_text.count("stablehlo.minimum") > adam_text.count("stablehlo.minimum")


@pytest.mark.parametrize(
    "grads, b2, finite_from",
    [
        # v underflows to 0 for two steps (m / 0 = inf), then recovers.
        ([1e-25, 1e-25, 1.0, 1.0, -1.0], 0.999, 2),
        # b2 = 0: a zero gradient leaves v = 0 under m != 0 (inf), then
        # c_n = 0 on the next step, where 0 * inf used to give NaN for good.
        ([1.0, 0.0, 1.0], 0.0, 2),
    ],
)
def test_an_infinite_direction_does_not_poison_a_zero_coefficient(
    grads: list[float], b2: float, finite_from: int
) -> None:
    """From the issue's two examples: wherever Adam's own update is finite
    again and c_n = 0 or the memory is finite, AAdam's is finite too; it is
    never NaN where the rule (docs/algorithms.md) gives a number."""
    ours, adam = aadam_optax.aadam(0.1, b2=b2, eps=0.0), optax.adam(0.1, b2=b2, eps=0.0)
    params = jnp.zeros(1)
    ours_state, adam_state = ours.init(params), adam.init(params)
    prev_update, prev_sign = 0.0, 0.0
    for n, g in enumerate(grads):
        grad = jnp.array([g], jnp.float32)
        update, ours_state = ours.update(grad, ours_state, params)
        adam_update, adam_state = adam.update(grad, adam_state, params)
        a = -float(adam_update[0]) / 0.1
        c = float(np.sign(g)) * prev_sign
        term = 0.0 if c == 0 else c * prev_update
        expected = 0.9 * a + 0.1 * term
        assert not np.isnan(update[0])
        if np.isfinite(expected):
            np.testing.assert_allclose(-float(update[0]) / 0.1, expected, rtol=1e-6)
        else:
            assert float(-update[0] / 0.1) == expected
        if n >= finite_from and np.isfinite(a) and np.isfinite(term):
            assert np.isfinite(update[0])
        prev_update, prev_sign = float(ours_state[0].prev_update[0]), float(np.sign(g))


def test_a_zero_gradient_clears_a_nan_memory() -> None:
    """docs/algorithms.md: a zero coefficient contributes exactly 0, even
    against a NaN u_{n-1}. optax.scale_by_adam(eps=0, eps_root=0) gives 0/0 =
    NaN for a component whose gradients are all zero; with a zero gradient
    c_n = 0, so the next u_n is b1 a_n, not NaN."""
    inner = optax.scale_by_adam(eps=0.0, eps_root=0.0)
    tx = aadam_optax.accelerate(inner)
    state, inner_state = tx.init(jnp.zeros(2)), inner.init(jnp.zeros(2))
    directions, adam = [], []
    for grad in ([0.0, 1.0], [0.0, 1.0], [1.0, 1.0]):
        update, state = tx.update(jnp.array(grad), state)
        direction, inner_state = inner.update(jnp.array(grad), inner_state)
        directions.append(np.asarray(update))
        adam.append(np.asarray(direction))
    assert np.isnan(directions[1][0])  # Optax's 0 / 0, accelerated
    # Step 3: g = 1 after g = 0, so c_3 = 0 and u_3 = b1 a_3, with Adam's a_3.
    np.testing.assert_allclose(directions[2][0], 0.9 * adam[2][0], rtol=1e-6)


SCALAR_LR, SCALAR_WD = 1e-3, 0.5
SCALAR_GRADS = [0.5, -0.25, 0.0, 2.0, 2.0, -1.0]
SCALAR_OPTIMIZERS: dict[str, tuple[Any, ref.Config, float]] = {
    "aadam": (
        lambda: aadam_optax.aadam(SCALAR_LR, B1, B2),
        ref.Config("adam", B1, B2),
        0.0,
    ),
    "aadamw": (
        lambda: aadam_optax.aadamw(SCALAR_LR, B1, B2, weight_decay=SCALAR_WD),
        ref.Config("adam", B1, B2),
        SCALAR_WD,
    ),
    "aadamax": (
        lambda: aadam_optax.aadamax(SCALAR_LR, B1, B2),
        ref.Config("adamax", B1, B2),
        0.0,
    ),
    "aamsgrad": (
        lambda: aadam_optax.aamsgrad(SCALAR_LR, B1, B2),
        ref.Config("amsgrad", B1, B2),
        0.0,
    ),
    "accelerate_adam": (
        lambda: optax.chain(
            aadam_optax.accelerate(optax.scale_by_adam(B1, B2), B1),
            optax.scale_by_learning_rate(SCALAR_LR),
        ),
        ref.Config("adam", B1, B2),
        0.0,
    ),
}


@pytest.mark.parametrize("name", list(SCALAR_OPTIMIZERS))
def test_python_scalars_are_taken_as_arrays(name: str) -> None:
    """A Python float param and gradients (`o.update(0.5, o.init(1.0))`, which
    used to raise AttributeError) give, step by step, the updates of a 0-d
    float32 array, and those are the reference's."""
    make, config, weight_decay = SCALAR_OPTIMIZERS[name]
    optimizer = make()
    param = 1.0
    scalar_state = optimizer.init(param)
    array_state = optimizer.init(jnp.asarray(param, jnp.float32))
    updates = []
    for grad in SCALAR_GRADS:
        update, scalar_state = optimizer.update(grad, scalar_state, param)
        expected, array_state = optimizer.update(
            jnp.asarray(grad, jnp.float32),
            array_state,
            jnp.asarray(param, jnp.float32),
        )
        assert update.shape == () and update.dtype == jnp.float32
        np.testing.assert_array_equal(update, expected)
        updates.append(float(update))
    # The same state, in the same dtypes (a jitted step would not recompile).
    for ours, theirs in zip(
        jax.tree.leaves(scalar_state), jax.tree.leaves(array_state), strict=True
    ):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    history = ref.run_directions(np.array(SCALAR_GRADS), config)
    np.testing.assert_allclose(
        updates,
        -SCALAR_LR * (history.accelerated + weight_decay * param),
        rtol=2e-6,
        atol=1e-6 * SCALAR_LR,  # float32 rounding, where a flip cancels terms
    )
