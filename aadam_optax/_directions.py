"""Pieces of the Adam-family directions `a_n` shared by the accelerated optimizers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def bias_corrected(moment: Any, decay: Any, count: jax.Array, enabled: bool) -> Any:
    """`moment / (1 - decay**count)` when `enabled`, else `moment` unchanged."""
    if not enabled:
        return moment
    return optax.tree.bias_correction(moment, decay, count)


def divide(numerators: Any, denominators: Any) -> Any:
    """Leafwise `numerator / denominator`, with `0 / 0 := 0`.

    With `eps = eps_root = 0` a component whose gradients have all been zero has
    `m = v = 0`; its direction is defined as 0 (no step), not NaN. A nonzero
    numerator over a zero denominator still gives inf, as the equations do.
    The zero denominator is replaced before dividing as well, so that the
    derivative of the unused quotient (`1 / 0`) cannot turn the zero cotangent
    into NaN for anyone differentiating through the update.
    """

    def leaf(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
        zero = numerator == 0
        quotient = numerator / jnp.where(zero, jnp.ones_like(denominator), denominator)
        return jnp.where(zero, jnp.zeros_like(quotient), quotient)

    return jax.tree.map(leaf, numerators, denominators)


def root_denominator(second_moments: Any, eps: Any, eps_root: Any) -> Any:
    """Adam's denominator `sqrt(v + eps_root) + eps`.

    Where `v + eps_root` is 0 the root is 0 and no derivative flows back
    through it: the square root's derivative there is infinite, and the
    direction it divides is `0 / 0 := 0` (see `divide`).
    """

    def leaf(v: jax.Array) -> jax.Array:
        radicand = v + eps_root
        # `== 0` rather than `> 0`, so that a NaN stays NaN.
        zero = radicand == 0
        root = jnp.sqrt(jnp.where(zero, jnp.ones_like(radicand), radicand))
        return jnp.where(zero, jnp.zeros_like(root), root) + eps

    return jax.tree.map(leaf, second_moments)
