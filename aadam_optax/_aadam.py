"""AAdam (Accelerated Adam) and AAdamW."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from aadam_optax import _directions, _validation
from aadam_optax._acceleration import accelerated_step, init_acceleration, zeros_like
from aadam_optax._validation import Variant


class ScaleByAAdamState(NamedTuple):
    """State of `scale_by_aadam`.

    Attributes:
      count: the number of steps taken, int32.
      mu: `m_n`, the decaying average of gradients.
      nu: `v_n`, the decaying average of squared gradients.
      prev_update: `u_{n-1}`, the previous direction before the learning rate.
      prev_grad_sign: `sign(g_{n-1})` as int8 (-1, 0, +1); 0 before the first
        step. Complex params keep both parts' signs packed as `re + 3 * im`.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    mu: optax.Updates
    nu: optax.Updates
    prev_update: optax.Updates
    prev_grad_sign: optax.Updates


def scale_by_aadam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: jax.typing.DTypeLike | None = None,
    *,
    nesterov: bool = False,
    variant: Variant = "sign_change",
    bias_correction: bool = True,
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates by the AAdam rule: Adam's direction, accelerated.

    See :func:`aadam_optax.aadam` for the update rule. The returned direction
    `u_n` points along the gradient and carries no learning rate.

    Args:
      b1: decay of the first moment, and weight of Adam's direction in `u_n`.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added to the second moment inside the square root.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      nesterov: accelerate NAdam's direction (Dozat 2016) instead of Adam's.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      bias_correction: divide the moments by `1 - b**n`; ``False`` gives
        RMSprop with momentum (the Adam paper's section 6.4 ablation).
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByAAdamState`.

    References:
      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

      Kingma and Ba, *Adam: A Method for Stochastic Optimization*,
      arXiv:1412.6980, 2014.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import scale_by_aadam
      >>> solver = optax.chain(
      ...     optax.clip_by_global_norm(1.0),
      ...     scale_by_aadam(),
      ...     optax.scale_by_learning_rate(0.1),
      ... )
      >>> state = solver.init(jnp.zeros(2))
      >>> updates, state = solver.update(jnp.array([3.0, -0.5]), state)
      >>> print(updates.round(4))  # first step: -lr * b1 * sign(g)
      [-0.09  0.09]
    """
    _validation.check_adam_family(
        b1, b2, eps, eps_root, variant, mu_dtype, prev_update_dtype
    )
    nesterov = _validation.optax_flag("nesterov", nesterov)
    _validation.check_bool("bias_correction", bias_correction)
    b1, b2, eps, eps_root = _directions.real(b1, b2, eps, eps_root)

    def init_fn(params: optax.Params) -> ScaleByAAdamState:
        prev_update, prev_grad_sign = init_acceleration(params, prev_update_dtype)
        return ScaleByAAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros_like(params, mu_dtype),
            nu=optax.tree.zeros_like(params),
            prev_update=prev_update,
            prev_grad_sign=prev_grad_sign,
        )

    def update_fn(
        updates: optax.Updates,
        state: ScaleByAAdamState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ScaleByAAdamState]:
        del params, extra_args
        _validation.check_matching_tree(updates, state.mu)
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        directions = _directions.divide(
            _directions.first_moment_estimate(
                mu, updates, b1, count, bias_correction, nesterov
            ),
            _directions.denominator(
                _directions.bias_corrected(nu, b2, count, bias_correction),
                eps_root,
                eps,
            ),
            eps,
        )
        updates, prev_update, prev_grad_sign = accelerated_step(
            directions, updates, state.prev_update, state.prev_grad_sign, b1, variant
        )
        # The moments are stored in the dtypes they were initialised with.
        return updates, ScaleByAAdamState(
            count=count,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
            prev_update=prev_update,
            prev_grad_sign=prev_grad_sign,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def aadam(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: jax.typing.DTypeLike | None = None,
    *,
    nesterov: bool = False,
    variant: Variant = "sign_change",
    bias_correction: bool = True,
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AAdam: Adam plus a decaying average of past updates, braked on sign flips.

    With `g_n` the gradient, Adam's moments and direction are

    .. math::

      m_n = b_1 m_{n-1} + (1 - b_1) g_n, \quad
      v_n = b_2 v_{n-1} + (1 - b_2) |g_n|^2, \quad
      a_n = \frac{m_n / (1 - b_1^n)}{\sqrt{v_n / (1 - b_2^n) + \epsilon_{root}}
            + \epsilon},

    and AAdam's direction and update are

    .. math::

      u_n = b_1 a_n + (1 - b_1)\, c_n\, u_{n-1}, \quad u_0 = 0, \qquad
      \theta_{n+1} = \theta_n - \eta_n u_n,

    with `c_n = sign(g_n) sign(g_{n-1})` (``variant="sign_change"``, the AAdam
    text's final rule: the memory of past updates is added where the gradient
    kept its sign and subtracted where it flipped), `c_n = sign(g_n)`
    (``"sign"``, the text's first idea), or, for ``"magnitude"``, the memory
    term `(1 - b_1) sign(g_n) sign(g_{n-1}) |u_{n-1}| sign(a_n)`, which adds the
    previous step's size to Adam's step, or takes it away, along Adam's current
    direction (a large enough brake can reverse the step). `sign(0) = 0`, so the first
    step, and any component whose gradient is exactly zero, takes `b_1 a_n`.

    With a constant learning rate this is exactly the text's
    `theta_{n+1} = theta_n - (eta b_1 mhat_n / sqrt(vhat_n + eps) + d)`,
    `d = (1 - b_1) c_n Delta theta_{n-1}`. With a schedule the previous direction
    is scaled by the current learning rate `eta_n`, not by the one it was taken
    with. At an equal learning rate AAdam's first step is `b_1` times Adam's.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment, and weight of Adam's direction in `u_n`.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root (the Adam paper's).
      eps_root: added inside the square root (the AAdam text's form is
        `eps=0, eps_root=1e-8`).
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      nesterov: accelerate NAdam's direction (Dozat 2016) instead of Adam's:
        `mhat_n` becomes `b_1 m_n / (1 - b_1^{n+1}) + (1 - b_1) g_n / (1 -
        b_1^n)`, as in `optax.adam(..., nesterov=True)`.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      bias_correction: divide the moments by `1 - b**n`; ``False`` gives RMSprop
        with momentum (the Adam paper's section 6.4 ablation).
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    References:
      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

      Kingma and Ba, *Adam: A Method for Stochastic Optimization*,
      arXiv:1412.6980, 2014.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import aadam
      >>> def f(x):
      ...     return jnp.sum(x**2)
      >>> solver = aadam(learning_rate=0.1)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = solver.init(params)
      >>> updates, state = solver.update(jax.grad(f)(params), state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> # Adam's first step is lr * sign(g); AAdam's is b1 times that.
      >>> print(" ".join(f"{p:.4f}" for p in params))
      0.9100 1.9100 2.9100
      >>> for _ in range(300):
      ...     updates, state = solver.update(jax.grad(f)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> print(f(params) < 1e-3)
      True
    """
    _validation.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_aadam(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            nesterov=nesterov,
            variant=variant,
            bias_correction=bias_correction,
            prev_update_dtype=prev_update_dtype,
        ),
        optax.scale_by_learning_rate(_directions.real(learning_rate)),
    )


def aadamw(
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
) -> optax.GradientTransformationExtraArgs:
    r"""AAdamW: AAdam with decoupled weight decay.

    .. math::

      \theta_{n+1} = \theta_n - \eta_n \left(u_n + \lambda\, \theta_n\right),

    where `u_n` is AAdam's direction (see :func:`aadam_optax.aadam`) and the decay
    `lambda theta_n` applies only where `mask` is true. The decay is never
    accelerated: it does not enter `prev_update`.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment, and weight of Adam's direction in `u_n`.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      weight_decay: the decoupled decay `lambda` (>= 0), or a schedule of it.
      mask: a tree of booleans shaped like the params, or a function of the
        params returning one; the decay applies where it is true. `None` decays
        every param. Under `optax.inject_hyperparams` pass
        ``static_args=("mask",)`` with a function, as for `optax.adamw`.
      nesterov: accelerate NAdam's direction instead of Adam's.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      bias_correction: divide the moments by `1 - b**n`.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    References:
      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

      Loshchilov and Hutter, *Decoupled Weight Decay Regularization*,
      arXiv:1711.05101, 2017.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import aadamw
      >>> solver = aadamw(learning_rate=0.1, weight_decay=0.5)
      >>> params = jnp.array([2.0, -4.0])
      >>> state = solver.init(params)
      >>> updates, state = solver.update(jnp.zeros(2), state, params)
      >>> print(updates)  # zero gradient: only the decay, -lr * wd * params
      [-0.1  0.2]
    """
    _validation.check_learning_rate(learning_rate)
    _validation.check_schedule_or_non_negative("weight_decay", weight_decay)
    return optax.chain(
        scale_by_aadam(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            nesterov=nesterov,
            variant=variant,
            bias_correction=bias_correction,
            prev_update_dtype=prev_update_dtype,
        ),
        optax.add_decayed_weights(_directions.real(weight_decay), mask),
        optax.scale_by_learning_rate(_directions.real(learning_rate)),
    )
