"""The cautious mask: `cautious`, `scale_by_cautious`, `cautious_adamw` and
`cautious_aadamw` (docs/algorithms.md, "The cautious mask").

Every expected value is derived in the test from the mask's equations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import aadam_optax as ao


def fixed_direction(u: jnp.ndarray) -> optax.GradientTransformation:
    """An inner transformation whose update is always `u`."""
    return optax.GradientTransformation(lambda p: (), lambda g, s, p=None: (u, s))


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
