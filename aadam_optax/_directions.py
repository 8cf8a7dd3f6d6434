"""Pieces of the Adam-family directions `a_n` shared by the accelerated optimizers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def bias_corrected(moment: Any, decay: Any, count: jax.Array, enabled: bool) -> Any:
    """`moment / (1 - decay**count)` when `enabled`, else `moment` unchanged."""
    if not enabled:
        return moment
    return optax.tree.bias_correction(moment, decay, count)


def _positive_in(eps: Any, dtype: Any) -> bool:
    """Whether `eps` is known while tracing and is a normal number in `dtype`.

    A Python or NumPy number is known; a JAX array (`optax.inject_hyperparams`
    passes one) is not looked at. Normal, not just > 0: 1e-8 rounds to 0 in
    float16, and XLA:CPU flushes subnormals such as 1e-40 to 0.
    """
    if not isinstance(eps, (int, float, np.number, np.ndarray)):
        return False
    smallest_normal = jnp.finfo(dtype).smallest_normal
    return bool(np.all(np.asarray(eps).astype(dtype) >= smallest_normal))


def divide(numerators: Any, scales: Any, eps: Any) -> Any:
    """Leafwise `numerator / (scale + eps)`, with `0 / 0 := 0`.

    Every scale is real and non-negative (stored in a complex dtype for
    complex params); a complex numerator is divided part by part. Where `eps`
    is known to be a normal number in the denominator's dtype no denominator
    can be zero, and the division is plain. Otherwise a zero denominator is
    possible: with `eps = eps_root = 0` a component whose gradients have all
    been zero has `m = v = 0`, and its direction is defined as 0 (no step),
    not NaN. A nonzero numerator over a zero denominator still gives inf, as
    the equations do. The zero denominator is replaced before dividing as
    well, so that the derivative of the unused quotient (`1 / 0`) cannot turn
    the zero cotangent into NaN for anyone differentiating through the update.
    """

    def leaf(numerator: jax.Array, scale: jax.Array) -> jax.Array:
        if jnp.iscomplexobj(numerator):
            # The scale is real, though stored complex for complex params.
            # Part by part: a complex division by a tiny real (|g| ~ 1e-38 in
            # AAdaMax) squares it to 0 and returns NaN.
            real = jnp.real(scale)
            return jax.lax.complex(
                leaf(numerator.real, real), leaf(numerator.imag, real)
            )
        denominator = scale + eps
        if _positive_in(eps, denominator.dtype):
            return numerator / denominator
        undefined = (numerator == 0) & (denominator == 0)
        quotient = numerator / jnp.where(undefined, 1, denominator)
        return jnp.where(undefined, jnp.zeros_like(quotient), quotient)

    return jax.tree.map(leaf, numerators, scales)


@jax.custom_jvp
def _sqrt(x: jax.Array) -> jax.Array:
    """`sqrt(x)`, whose derivative at 0 is 0 rather than infinite."""
    return jnp.sqrt(x)


@_sqrt.defjvp
def _sqrt_jvp(
    primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (tangent,) = primals, tangents
    # `_sqrt`, not `jnp.sqrt`: a second derivative then goes through this rule
    # again rather than through the plain root's infinite slope at 0.
    root = _sqrt(x)
    zero = root == 0
    slope = 0.5 / jnp.where(zero, jnp.ones_like(root), root)
    return root, jnp.where(zero, jnp.zeros_like(root), tangent * slope)


def root(second_moments: Any, eps_root: Any) -> Any:
    """Adam's `sqrt(v + eps_root)`, to which `divide` adds `eps`.

    Where `v + eps_root` is 0 no derivative flows back through the root: the
    square root's derivative there is infinite, and what it divides is then 0
    (`divide` defines `0 / 0 := 0`). The value is the plain square root's.
    """
    return jax.tree.map(lambda v: _sqrt(v + eps_root), second_moments)
