"""AAMSGrad: AMSGrad's direction, accelerated."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from aadam_optax import _directions, _validation
from aadam_optax._acceleration import accelerated_step, init_acceleration, zeros_like
from aadam_optax._validation import Variant


class ScaleByAAMSGradState(NamedTuple):
    """State of `scale_by_aamsgrad`.

    Attributes:
      count: the number of steps taken, int32.
      mu: `m_n`, the decaying average of gradients.
      nu: `v_n`, the decaying average of squared gradients.
      nu_max: the running maximum of the bias-corrected `v_n` (of `v_n` with
        ``bias_correction_nu=False``).
      prev_update: `u_{n-1}`, the previous direction before the learning rate.
      prev_grad_sign: `sign(g_{n-1})` as int8 (-1, 0, +1).
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates
    prev_update: optax.Updates
    prev_grad_sign: optax.Updates


def scale_by_aamsgrad(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: jax.typing.DTypeLike | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    variant: Variant = "sign_change",
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates by the AAMSGrad rule; see :func:`aadam_optax.aamsgrad`.

    Args:
      b1: decay of the first moment, and weight of AMSGrad's direction in `u_n`.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      bias_correction_mu: divide `m_n` by `1 - b1**n` (``False``: the AMSGrad
        paper's form, as in `optax.amsgrad`).
      bias_correction_nu: take the maximum of `v_n / (1 - b2**n)` rather than
        of `v_n` (``False``: the AMSGrad paper's form).
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByAAMSGradState`.

    References:
      Reddi, Kale and Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018.

      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

    Examples:
      >>> import jax.numpy as jnp
      >>> from aadam_optax import scale_by_aamsgrad
      >>> transform = scale_by_aamsgrad()
      >>> state = transform.init(jnp.zeros(1))
      >>> for grad in (10.0, 1.0):
      ...     direction, state = transform.update(jnp.array([grad]), state)
      >>> # The bias-corrected second moment fell from 100 to about 50; the
      >>> # denominator keeps its largest value.
      >>> print(state.nu_max.round(2))
      [100.]
    """
    _validation.check_adam_family(
        b1, b2, eps, eps_root, variant, mu_dtype, prev_update_dtype
    )
    bias_correction_mu = _validation.optax_flag(
        "bias_correction_mu", bias_correction_mu
    )
    bias_correction_nu = _validation.optax_flag(
        "bias_correction_nu", bias_correction_nu
    )
    b1, b2, eps, eps_root = _directions.real(b1, b2, eps, eps_root)

    def init_fn(params: optax.Params) -> ScaleByAAMSGradState:
        prev_update, prev_grad_sign = init_acceleration(params, prev_update_dtype)
        return ScaleByAAMSGradState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros_like(params, mu_dtype),
            nu=optax.tree.zeros_like(params),
            nu_max=optax.tree.zeros_like(params),
            prev_update=prev_update,
            prev_grad_sign=prev_grad_sign,
        )

    def update_fn(
        updates: optax.Updates,
        state: ScaleByAAMSGradState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ScaleByAAMSGradState]:
        del params, extra_args
        _validation.check_matching_tree(updates, state.mu)
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        nu_max = jax.tree.map(
            jnp.maximum,
            state.nu_max,
            _directions.bias_corrected(nu, b2, count, bias_correction_nu),
        )
        directions = _directions.divide(
            _directions.bias_corrected(mu, b1, count, bias_correction_mu),
            _directions.denominator(nu_max, eps_root, eps),
            eps,
        )
        updates, prev_update, prev_grad_sign = accelerated_step(
            directions, updates, state.prev_update, state.prev_grad_sign, b1, variant
        )
        # The moments are stored in the dtypes they were initialised with.
        return updates, ScaleByAAMSGradState(
            count=count,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
            nu_max=optax.tree.cast_like(nu_max, state.nu_max),
            prev_update=prev_update,
            prev_grad_sign=prev_grad_sign,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def aamsgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    mu_dtype: jax.typing.DTypeLike | None = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    variant: Variant = "sign_change",
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AAMSGrad: AMSGrad (Adam with a non-increasing step), accelerated.

    .. math::

      \hat v^{max}_n = \max(\hat v^{max}_{n-1}, v_n / (1 - b_2^n)), \quad
      a_n = \frac{m_n / (1 - b_1^n)}{\sqrt{\hat v^{max}_n + \epsilon_{root}}
            + \epsilon},

    with Adam's `m_n`, `v_n`, as `optax.amsgrad` computes them; then
    `u_n = b_1 a_n + (1 - b_1) c_n u_{n-1}` and `theta_{n+1} = theta_n - eta_n
    u_n`, with `c_n` as in :func:`aadam_optax.aadam`.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment, and weight of AMSGrad's direction in `u_n`.
      b2: decay of the second moment.
      eps: added to the denominator outside the square root.
      eps_root: added inside the square root.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      bias_correction_mu: divide `m_n` by `1 - b1**n` (``False``: the AMSGrad
        paper's form, as in `optax.amsgrad`).
      bias_correction_nu: take the maximum of `v_n / (1 - b2**n)` rather than
        of `v_n` (``False``: the AMSGrad paper's form).
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    References:
      Reddi, Kale and Kumar, *On the Convergence of Adam and Beyond*, ICLR 2018.

      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

    Examples:
      >>> import jax.numpy as jnp
      >>> from aadam_optax import aamsgrad
      >>> solver = aamsgrad(learning_rate=0.1)
      >>> state = solver.init(jnp.zeros(2))
      >>> updates, state = solver.update(jnp.array([4.0, -0.5]), state)
      >>> print(updates.round(4))  # first step: -lr * b1 * g / |g|
      [-0.09  0.09]
    """
    _validation.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_aamsgrad(
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            bias_correction_mu,
            bias_correction_nu,
            variant=variant,
            prev_update_dtype=prev_update_dtype,
        ),
        optax.scale_by_learning_rate(_directions.real(learning_rate)),
    )
