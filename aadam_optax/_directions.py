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
    """

    def leaf(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
        quotient = numerator / denominator
        return jnp.where(numerator == 0, jnp.zeros_like(quotient), quotient)

    return jax.tree.map(leaf, numerators, denominators)


def root_denominator(second_moments: Any, eps: Any, eps_root: Any) -> Any:
    """Adam's denominator `sqrt(v + eps_root) + eps`."""
    return jax.tree.map(lambda v: jnp.sqrt(v + eps_root) + eps, second_moments)
