"""The cautious mask (Liang et al. 2024), for any Optax optimizer or direction.

`cautious(optimizer)` masks a full optimizer's updates, `scale_by_cautious(inner)`
a direction before the learning rate, and `cautious_adamw` / `cautious_aadamw`
are the paper's C-AdamW and its accelerated form. All of them call
`_cautious_leaf`; the mask lives nowhere else.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from aadam_optax import _directions, _validation
from aadam_optax._aadam import scale_by_aadam
from aadam_optax._validation import Variant


def _cautious_leaf(
    step: jax.Array, grad: jax.Array, eps: Any, descent: bool
) -> jax.Array:
    """One leaf of the mask: `step * phi * numel / (sum(phi) + eps)`.

    `phi` keeps the components of `step` that point downhill: against the
    gradient for an update (`descent=True`, Optax's additive convention),
    along it for a direction before the learning rate. Signs are compared, not
    the product `step * grad`, which underflows to 0 for tiny values. A complex
    leaf is masked as the pair of reals it is made of, each part by its own
    sign, as AAdam's acceleration reads it; `numel` counts real components.
    """
    step, grad = jnp.asarray(step), jnp.asarray(grad)
    if step.size == 0:
        return step
    step_parts: tuple[jax.Array, ...]
    grad_parts: tuple[jax.Array, ...]
    if jnp.iscomplexobj(grad):
        step_parts = (jnp.real(step), jnp.imag(step))
        grad_parts = (jnp.real(grad), jnp.imag(grad))
    else:
        step_parts, grad_parts = (jnp.real(step),), (grad,)
    keeps = []
    for step_part, grad_part in zip(step_parts, grad_parts, strict=True):
        downhill = -step_part if descent else step_part
        agrees = ((downhill > 0) & (grad_part > 0)) | ((downhill < 0) & (grad_part < 0))
        # A NaN step is kept so that it propagates, as it would without the
        # mask: zeroing it would freeze a diverged parameter in silence.
        keeps.append(agrees | jnp.isnan(step_part))
    # Counted in int32, exact for any leaf: a count in the leaf's float16
    # would overflow to inf past 65504 kept components.
    kept = jnp.sum(keeps[0], dtype=jnp.int32)
    for keep in keeps[1:]:
        kept = kept + jnp.sum(keep, dtype=jnp.int32)
    real_dtype = jnp.promote_types(jnp.finfo(step.dtype).dtype, jnp.float32)
    denominator = kept.astype(real_dtype) + _directions.real(eps)
    # A zero denominator (eps = 0, nothing kept) scales only masked components;
    # dividing by 1 there keeps the scale, and its gradient, finite.
    scale = (step.size * len(keeps)) / jnp.where(denominator > 0, denominator, 1)
    if not jnp.iscomplexobj(step):
        return jnp.where(keeps[0], (step * scale).astype(step.dtype), 0)
    # Each part scaled on its own: a complex product would let a NaN or inf in
    # one part spill into the other.
    keep_real, keep_imag = keeps if len(keeps) == 2 else (keeps[0], keeps[0])
    part_dtype = jnp.finfo(step.dtype).dtype
    real = jnp.where(keep_real, jnp.real(step) * scale, 0).astype(part_dtype)
    imag = jnp.where(keep_imag, jnp.imag(step) * scale, 0).astype(part_dtype)
    return jax.lax.complex(real, imag)


def _masked(
    inner: optax.GradientTransformation, eps: Any, descent: bool, eps_name: str
) -> optax.GradientTransformationExtraArgs:
    """`inner` with the mask applied to what it returns, leaf by leaf.

    The state is `inner`'s own, unchanged: the mask keeps no state, so a
    checkpoint of `inner` restores into the masked optimizer and back, and
    `inner`'s hyperparameters stay where `optax.inject_hyperparams` put them.
    """
    if isinstance(inner, optax.MultiSteps):
        # Its update is built from the mean of k gradients but handed out with
        # the last one: the mask would read the wrong gradient.
        raise TypeError(
            "The cautious mask cannot wrap optax.MultiSteps: it would compare "
            "the accumulated update with the last micro-batch's gradient. Wrap "
            "it the other way: optax.MultiSteps(cautious(...), k)."
        )
    _validation.check_non_negative(eps_name, eps)
    if jnp.ndim(eps) != 0:
        # Checked on traced values too (shapes are static): an array would
        # scale each component differently, or reshape the update.
        raise ValueError(f"{eps_name} must be a scalar, got shape {jnp.shape(eps)}.")
    inner = optax.with_extra_args_support(inner)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.OptState]:
        _validation.check_params(updates, "the cautious mask")
        steps, state = inner.update(updates, state, params, **extra_args)
        masked = jax.tree.map(
            lambda step, grad: _cautious_leaf(step, grad, eps, descent),
            steps,
            updates,
        )
        return masked, state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def cautious(
    optimizer: optax.GradientTransformation, *, eps: jax.typing.ArrayLike = 1.0
) -> optax.GradientTransformationExtraArgs:
    r"""Cautious masking (Liang et al. 2024) of a full Optax optimizer.

    With `g_n` the gradient the optimizer receives and `Delta_n` the update it
    returns (added to the params, so a descent step has `Delta_n g_n < 0`),
    each leaf (tensor) of the update becomes

    .. math::

      \phi_n = 1[\Delta_n g_n < 0], \qquad
      \tilde\Delta_n = \Delta_n \phi_n \frac{\mathrm{numel}}{\sum \phi_n + \epsilon}:

    components that do not point downhill are zeroed, and the survivors are
    scaled up so that the leaf's mean step keeps its size. The sum runs over
    the whole leaf, also when it is sharded over devices under `jax.jit`.

    Anything inside `optimizer` is part of its update and is masked with it,
    a decoupled weight decay included: `cautious(optax.adamw(...))` masks the
    decay too. For the paper's C-AdamW, whose decay is left unmasked, use
    :func:`cautious_adamw`. To mask a direction before the learning rate
    (inside an `optax.chain`), use :func:`scale_by_cautious`, whose test has
    the opposite sign.

    Edge cases: a component whose gradient is exactly 0 is masked (it has no
    downhill direction), so an all-zero gradient gives a zero update, never
    NaN; an empty leaf stays empty; a NaN in the update is kept, so it
    propagates as it would without the mask. Complex leaves are masked as
    pairs of reals, each part by its own sign (`numel` counts both parts).
    The scale is computed in at least float32 and the result cast back to the
    update's dtype, where a large scale can overflow float16. An
    `optax.MultiSteps` optimizer is refused (its update comes from the mean of
    its gradients, not the last one): use `optax.MultiSteps(cautious(...), k)`.

    Args:
      optimizer: the optimizer to mask, with its learning rate, for example
        `optax.adamw(1e-3)`, `aadam_optax.aadam(1e-3)` or `optax.lion(1e-4)`.
      eps: added to the number of kept components (a finite scalar >= 0).
        The default 1 is the authors' original C-AdamW code (and
        `pytorch_optimizer`'s), the rule this project's benchmarks used; a
        tiny `eps`, or 0, divides by the kept fraction, as the paper's
        current version (arXiv 2411.16085v4) and the authors' current code
        do.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` whose state is
      `optimizer`'s own.

    References:
      Liang, Chen, Liu and Liu, *Cautious Optimizers: Improving Training with
      One Line of Code*, arXiv:2411.16085, 2024.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import cautious
      >>> solver = cautious(optax.sgd(learning_rate=0.5, momentum=0.5))
      >>> state = solver.init(jnp.zeros(4))
      >>> _, state = solver.update(jnp.ones(4), state)
      >>> grads = jnp.array([1.0, -0.25, -0.25, -0.25])
      >>> updates, state = solver.update(grads, state)
      >>> # The momentum outweighs the three flipped gradients: those steps
      >>> # would go uphill and are dropped; the one left is scaled by
      >>> # 4 / (1 + 1), to -0.5 * 1.5 * 2.
      >>> print(updates)
      [-1.5  0.   0.   0. ]
    """
    _validation.check_transformation("optimizer", optimizer, "optax.adamw(1e-3)")
    return _masked(optimizer, eps, descent=True, eps_name="eps")


def scale_by_cautious(
    inner: optax.GradientTransformation, *, eps: jax.typing.ArrayLike = 1.0
) -> optax.GradientTransformationExtraArgs:
    r"""Cautious masking of a direction, before the learning rate.

    `inner` returns a direction `s_n` that points along the gradient (as
    `optax.scale_by_adam` and :func:`aadam_optax.scale_by_aadam` do; the
    learning-rate stage later in the chain negates it). Each leaf becomes

    .. math::

      \phi_n = 1[s_n g_n > 0], \qquad
      \tilde s_n = s_n \phi_n \frac{\mathrm{numel}}{\sum \phi_n + \epsilon},

    the same mask as :func:`cautious`, read in the direction's sign
    convention; every edge case is as there. Use it for a full optimizer's
    update and it drops the steps that point downhill: wrap a full optimizer
    with :func:`cautious` instead.

    Args:
      inner: the direction to mask, for example `optax.scale_by_adam()`.
      eps: added to the number of kept components (finite, >= 0); see
        :func:`cautious`.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` whose state is
      `inner`'s own.

    References:
      Liang, Chen, Liu and Liu, *Cautious Optimizers: Improving Training with
      One Line of Code*, arXiv:2411.16085, 2024.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import scale_by_cautious
      >>> solver = optax.chain(
      ...     scale_by_cautious(optax.trace(decay=0.5)),
      ...     optax.scale_by_learning_rate(0.5),
      ... )
      >>> state = solver.init(jnp.zeros(4))
      >>> _, state = solver.update(jnp.ones(4), state)
      >>> grads = jnp.array([1.0, -0.25, -0.25, -0.25])
      >>> updates, state = solver.update(grads, state)
      >>> # As cautious(optax.sgd(0.5, momentum=0.5)); adding 0.0 prints the
      >>> # learning rate's -0.0 as 0.
      >>> print(updates + 0.0)
      [-1.5  0.   0.   0. ]
    """
    _validation.check_transformation("inner", inner, "optax.scale_by_adam()")
    return _masked(inner, eps, descent=False, eps_name="eps")


def _cautious_decoupled(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule,
    mask: Any,
    cautious_eps: Any,
) -> optax.GradientTransformationExtraArgs:
    """The C-AdamW chain around `direction`: masked, then the unmasked decay."""
    _validation.check_learning_rate(learning_rate)
    _validation.check_schedule_or_non_negative("weight_decay", weight_decay)
    return optax.chain(
        _masked(direction, cautious_eps, descent=False, eps_name="cautious_eps"),
        optax.add_decayed_weights(_directions.real(weight_decay), mask),
        optax.scale_by_learning_rate(_directions.real(learning_rate)),
    )


def cautious_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: jax.typing.DTypeLike | None = None,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any | None = None,
    *,
    nesterov: bool = False,
    cautious_eps: jax.typing.ArrayLike = 1.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Cautious AdamW (C-AdamW): AdamW with Adam's direction masked.

    With `a_n` Adam's direction (see `optax.scale_by_adam`) and `g_n` the
    gradient, per leaf (tensor)

    .. math::

      \phi_n = 1[a_n g_n > 0], \quad
      \tilde a_n = a_n \phi_n \frac{\mathrm{numel}}{\sum \phi_n + \epsilon_c},
      \quad
      \theta_{n+1} = \theta_n - \eta_n (\tilde a_n + \lambda \theta_n).

    The decoupled decay `lambda theta_n` is not masked, as in the paper's
    C-AdamW; it applies where `mask` is true. Adam's moments are not masked
    either. The state is `optax.adamw`'s, so a checkpoint of one restores
    into the other. The edge cases are :func:`cautious`'s.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: added to Adam's denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      weight_decay: the decoupled decay `lambda` (>= 0), or a schedule of it.
      mask: a tree of booleans shaped like the params, or a function of the
        params returning one; the decay applies where it is true (this is
        `optax.adamw`'s decay mask, not the cautious one).
      nesterov: mask NAdam's direction instead of Adam's.
      cautious_eps: `epsilon_c`, added to the number of kept components; 1
        is the authors' original code, a tiny value or 0 the paper's current
        version (see :func:`cautious`).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    References:
      Liang, Chen, Liu and Liu, *Cautious Optimizers: Improving Training with
      One Line of Code*, arXiv:2411.16085, 2024.

      Loshchilov and Hutter, *Decoupled Weight Decay Regularization*,
      arXiv:1711.05101, 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> from aadam_optax import cautious_adamw
      >>> solver = cautious_adamw(learning_rate=0.5, weight_decay=0.5)
      >>> params = jnp.array([2.0, -4.0])
      >>> state = solver.init(params)
      >>> updates, state = solver.update(jnp.array([1.0, 0.0]), state, params)
      >>> # Adam's first direction is sign(g): the first component is kept and
      >>> # scaled by 2 / (1 + 1); the second has no gradient. The decay is
      >>> # applied to both: -lr * (a + wd * params).
      >>> print(updates.round(4))
      [-1.  1.]
    """
    _validation.check_decay_rate("b1", b1)
    _validation.check_decay_rate("b2", b2)
    _validation.check_non_negative("eps", eps)
    _validation.check_non_negative("eps_root", eps_root)
    _validation.check_float_dtype("mu_dtype", mu_dtype, complex_allowed=True)
    nesterov = _validation.optax_flag("nesterov", nesterov)
    direction = optax.scale_by_adam(
        *_directions.real(b1, b2, eps, eps_root), mu_dtype, nesterov=nesterov
    )
    return _cautious_decoupled(
        direction, learning_rate, weight_decay, mask, cautious_eps
    )


def cautious_aadamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: jax.typing.DTypeLike | None = None,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any | None = None,
    *,
    nesterov: bool = False,
    variant: Variant = "sign_change",
    bias_correction: bool = True,
    prev_update_dtype: jax.typing.DTypeLike | None = None,
    cautious_eps: jax.typing.ArrayLike = 1.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Cautious AAdamW: AAdamW with AAdam's accelerated direction masked.

    With `u_n` AAdam's direction (see :func:`aadam_optax.aadam`) and `g_n` the
    gradient, per leaf (tensor)

    .. math::

      \phi_n = 1[u_n g_n > 0], \quad
      \tilde u_n = u_n \phi_n \frac{\mathrm{numel}}{\sum \phi_n + \epsilon_c},
      \quad
      \theta_{n+1} = \theta_n - \eta_n (\tilde u_n + \lambda \theta_n).

    The mask and the acceleration read the same signal, whether a step agrees
    in sign with the gradient. AAdam's memory keeps its own, unmasked `u_n`:
    the mask decides which components move now, not what AAdam remembers, so
    a component masked at one step is still accelerated or braked by its
    history at the next. The decoupled decay is not masked, as in C-AdamW. The
    state is :func:`aadam_optax.aadamw`'s. The edge cases are
    :func:`cautious`'s.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment, and weight of Adam's direction in `u_n`.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      weight_decay: the decoupled decay `lambda` (>= 0), or a schedule of it.
      mask: the decay's mask, as in :func:`aadam_optax.aadamw`.
      nesterov: accelerate NAdam's direction instead of Adam's.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      bias_correction: divide the moments by `1 - b**n`.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.
      cautious_eps: `epsilon_c`, added to the number of kept components (see
        :func:`cautious`).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    References:
      Liang, Chen, Liu and Liu, *Cautious Optimizers: Improving Training with
      One Line of Code*, arXiv:2411.16085, 2024.

      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

    Examples:
      >>> import jax.numpy as jnp
      >>> from aadam_optax import cautious_aadamw
      >>> solver = cautious_aadamw(learning_rate=0.1, weight_decay=0.0)
      >>> params = jnp.zeros(4)
      >>> state = solver.init(params)
      >>> grads = jnp.array([1.0, 0.0, 0.0, -2.0])
      >>> updates, state = solver.update(grads, state, params)
      >>> # AAdam's first direction is b1 * sign(g) = [0.9, 0, 0, -0.9]: two
      >>> # components are kept and scaled by 4 / (2 + 1) (adding 0.0 prints
      >>> # the learning rate's -0.0 as 0).
      >>> print(updates.round(4) + 0.0)
      [-0.12  0.    0.    0.12]
    """
    direction = scale_by_aadam(
        b1,
        b2,
        eps,
        eps_root,
        mu_dtype,
        nesterov=nesterov,
        variant=variant,
        bias_correction=bias_correction,
        prev_update_dtype=prev_update_dtype,
    )
    return _cautious_decoupled(
        direction, learning_rate, weight_decay, mask, cautious_eps
    )
