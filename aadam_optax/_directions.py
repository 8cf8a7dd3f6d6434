"""Pieces of the Adam-family directions `a_n` shared by the accelerated optimizers."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def real(*hyperparameters: Any) -> Any:
    """Each hyperparameter's real part, where it arrived as a complex array.

    `optax.inject_hyperparams` casts every numeric hyperparameter to the
    params' highest dtype, which is complex as soon as one param is; decay
    rates and epsilons are real numbers, and a complex one would turn the
    moments and updates of the real params complex. Returns one value for one
    argument, else a tuple.
    """
    values = tuple(
        jnp.real(h) if not callable(h) and jnp.iscomplexobj(h) else h
        for h in hyperparameters
    )
    return values[0] if len(values) == 1 else values


def bias_corrected(moment: Any, decay: Any, count: jax.Array, enabled: bool) -> Any:
    """`moment / (1 - decay**count)` when `enabled`, else `moment` unchanged."""
    if not enabled:
        return moment
    return optax.tree.bias_correction(moment, decay, count)


def first_moment_estimate(
    mu: Any,
    grads: Any,
    b1: Any,
    count: jax.Array,
    bias_correction: bool,
    nesterov: bool,
) -> Any:
    """Adam's `mhat_n`, or NAdam's look-ahead `b1 mhat_{n+1} + (1 - b1) ghat_n`.

    The Nesterov form is Dozat's (2016), written as `optax.scale_by_adam`
    writes it: the moment corrected one step ahead, the gradient corrected at
    the current step.
    """
    if not nesterov:
        return bias_corrected(mu, b1, count, bias_correction)
    return jax.tree.map(
        lambda m, g: b1 * m + (1 - b1) * g,
        bias_corrected(mu, b1, optax.safe_increment(count), bias_correction),
        bias_corrected(grads, b1, count, bias_correction),
    )


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


def divide(numerators: Any, denominators: Any, floor: Any) -> Any:
    """Leafwise `numerator / denominator`, with `0 / 0 := 0`.

    Every denominator is real, at least `floor` and possibly stored in a
    complex dtype (for complex params, as Optax stores them); a complex
    numerator is divided part by part. Where `floor` is known to be a normal
    number in the denominator's dtype no denominator can be zero, and the
    division is plain. Otherwise a zero denominator is possible: with
    `eps = eps_root = 0` a component whose gradients have all been zero has
    `m = v = 0`, and its direction is defined as 0 (no step), not NaN. A
    nonzero numerator over a zero denominator still gives inf, as the
    equations do. The zero denominator is replaced before dividing as well, so
    that the derivative of the unused quotient (`1 / 0`) cannot turn the zero
    cotangent into NaN for anyone differentiating through the update.
    """

    def leaf(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
        denominator = jnp.real(denominator)
        if jnp.iscomplexobj(numerator):
            # Part by part: a complex division by a tiny real (|g| ~ 1e-38 in
            # AAdaMax) squares it to 0 and returns NaN.
            return jax.lax.complex(
                leaf(numerator.real, denominator), leaf(numerator.imag, denominator)
            )
        if _positive_in(floor, denominator.dtype):
            return numerator / denominator
        undefined = (numerator == 0) & (denominator == 0)
        quotient = numerator / jnp.where(undefined, 1, denominator)
        return jnp.where(undefined, jnp.zeros_like(quotient), quotient)

    return jax.tree.map(leaf, numerators, denominators)


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


def denominator(second_moments: Any, eps_root: Any, eps: Any) -> Any:
    """Adam's `sqrt(v + eps_root) + eps`, real even where `v` is stored complex.

    Where `v + eps_root` is 0 no derivative flows back through the root: the
    square root's derivative there is infinite, and what it divides is then 0
    (`divide` defines `0 / 0 := 0`). The value is the plain square root's.
    """
    return jax.tree.map(lambda v: _sqrt(jnp.real(v) + eps_root) + eps, second_moments)
