"""A plain NumPy float64 reference of the cautious mask (docs/algorithms.md).

Written from the equations of Liang et al. 2024 ("Cautious Optimizers",
arXiv:2411.16085), not from the package. For one leaf (tensor), with `s` the
step before the learning rate (a direction along the gradient) and `g` the
gradient:

    phi = 1[s * g > 0]                         (component-wise)
    s~  = s * phi * numel / (sum(phi) + eps)

An update in Optax's additive convention (`Delta = -lr * s`) is kept where
`Delta * g < 0`, the same test. C-AdamW and C-AAdamW mask Adam's direction
`a_n` and AAdam's `u_n` (from `numpy_reference.step`) and add the decoupled
decay unmasked: `theta_{n+1} = theta_n - lr * (s~_n + wd * theta_n)`.

Edge cases as the package documents them: a zero gradient or a zero step is
not kept; a NaN step is kept (it propagates); a complex leaf is masked as the
pair of reals it is made of, each part by its own sign, and `numel` counts
both parts (a complex step for a real param is masked by the real gradient's
sign, component by component).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy_reference as ref


def _real_mask(step: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """phi for real arrays: the signs agree strictly, or the step is NaN."""
    return (np.sign(step) * np.sign(grad) > 0) | np.isnan(step)


def mask(
    step: np.ndarray, grad: np.ndarray, eps: float = 1.0, descent: bool = False
) -> np.ndarray:
    """One leaf of the cautious mask, in float64 (complex128 for complex leaves).

    `descent=True` reads `step` as an update added to the params (kept where it
    points against the gradient); `False` as a direction before the learning
    rate (kept where it points along the gradient).
    """
    step = np.asarray(step)
    grad = np.asarray(grad)
    direction = -step if descent else step
    if np.iscomplexobj(step) and not np.iscomplexobj(grad):
        # A complex step for a real param (a complex mu_dtype): the gradient
        # has only a real part, whose sign decides the whole component.
        keep = _real_mask(direction.real, grad)
        scale = step.size / (keep.sum() + eps) if step.size else 0.0
        return np.where(keep, step * scale, 0.0)
    if np.iscomplexobj(grad):
        keep_re = _real_mask(direction.real, grad.real)
        keep_im = _real_mask(direction.imag, grad.imag)
        numel, kept = 2 * step.size, keep_re.sum() + keep_im.sum()
        scale = numel / (kept + eps) if numel else 0.0
        return np.where(keep_re, step.real * scale, 0.0) + 1j * np.where(
            keep_im, step.imag * scale, 0.0
        )
    keep = _real_mask(direction, grad)
    numel, kept = step.size, keep.sum()
    scale = numel / (kept + eps) if numel else 0.0
    return np.where(keep, step.astype(np.float64) * scale, 0.0)


def decoupled_trajectory(
    params: dict[str, np.ndarray],
    grads: Sequence[dict[str, np.ndarray]],
    learning_rate: float,
    weight_decay: float,
    config: ref.Config,
    accelerated: bool,
    eps: float = 1.0,
) -> list[dict[str, np.ndarray]]:
    """The updates of C-AdamW (`accelerated=False`) or C-AAdamW, leaf by leaf.

    `config` holds the Adam-family hyperparameters; the mask reads Adam's `a_n`
    or AAdam's `u_n` from `numpy_reference.step`, and AAdam's memory keeps the
    unmasked `u_n` (the reference's own state). The decay is not masked.
    """
    theta = {k: np.asarray(v, np.float64) for k, v in params.items()}
    states = {k: ref.init(np.shape(v)) for k, v in params.items()}
    all_updates = []
    for grad in grads:
        updates = {}
        for key, g in grad.items():
            g = np.asarray(g, np.float64)
            direction, update, states[key] = ref.step(states[key], g, config)
            step = update if accelerated else direction
            updates[key] = -learning_rate * (
                mask(step, g, eps) + weight_decay * theta[key]
            )
        theta = {k: theta[k] + updates[k] for k in theta}
        all_updates.append(updates)
    return all_updates
