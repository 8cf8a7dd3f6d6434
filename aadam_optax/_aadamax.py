"""AAdaMax: AdaMax's infinity-norm direction, accelerated."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from aadam_optax import _directions, _validation
from aadam_optax._acceleration import accelerated_step, init_acceleration, zeros_like
from aadam_optax._validation import Variant


class ScaleByAAdaMaxState(NamedTuple):
    """State of `scale_by_aadamax`.

    Attributes:
      count: the number of steps taken, int32.
      mu: `m_n`, the decaying average of gradients.
      nu: `v_n = max(b2 v_{n-1}, |g_n| + eps)`, the decaying infinity norm of
        the gradients, as `optax.scale_by_adamax` keeps it.
      prev_update: `u_{n-1}`, the previous direction before the learning rate.
      prev_grad_sign: `sign(g_{n-1})` as int8 (-1, 0, +1); 0 before the first
        step. Complex params keep both parts' signs packed as `re + 3 * im`.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    mu: optax.Updates
    nu: optax.Updates
    prev_update: optax.Updates
    prev_grad_sign: optax.Updates


def scale_by_aadamax(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    variant: Variant = "sign_change",
    mu_dtype: jax.typing.DTypeLike | None = None,
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescales updates by the AAdaMax rule; see :func:`aadam_optax.aadamax`.

    Args:
      b1: decay of the first moment, and weight of AdaMax's direction in `u_n`.
      b2: decay of the infinity norm.
      eps: added to `|g_n|` inside the maximum, as in `optax.adamax`.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByAAdaMaxState`.

    References:
      Kingma and Ba, *Adam: A Method for Stochastic Optimization*, section 7,
      arXiv:1412.6980, 2014.

      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

    Examples:
      >>> import jax.numpy as jnp
      >>> from aadam_optax import scale_by_aadamax
      >>> transform = scale_by_aadamax(b1=0.9, b2=0.99)
      >>> state = transform.init(jnp.zeros(2))
      >>> direction, state = transform.update(jnp.array([4.0, -0.5]), state)
      >>> print(direction.round(4))  # first direction: b1 * g / |g|
      [ 0.9 -0.9]
      >>> print(state.nu)  # the infinity norm max(b2 * 0, |g|)
      [4.  0.5]
    """
    _validation.check_adam_family(
        b1, b2, eps, 0.0, variant, mu_dtype, prev_update_dtype
    )
    b1, b2, eps = _directions.real(b1, b2, eps)

    def init_fn(params: optax.Params) -> ScaleByAAdaMaxState:
        prev_update, prev_grad_sign = init_acceleration(params, prev_update_dtype)
        return ScaleByAAdaMaxState(
            count=jnp.zeros([], jnp.int32),
            mu=zeros_like(params, mu_dtype),
            nu=optax.tree.zeros_like(params),
            prev_update=prev_update,
            prev_grad_sign=prev_grad_sign,
        )

    def update_fn(
        updates: optax.Updates,
        state: ScaleByAAdaMaxState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ScaleByAAdaMaxState]:
        del params, extra_args
        _validation.check_matching_tree(updates, state.mu)
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_infinity_moment(updates, state.nu, b2, eps)
        # Every v_n >= eps, so eps is the floor of the denominators.
        directions = _directions.divide(
            _directions.bias_corrected(mu, b1, count, True), nu, eps
        )
        updates, prev_update, prev_grad_sign = accelerated_step(
            directions, updates, state.prev_update, state.prev_grad_sign, b1, variant
        )
        # The moments are stored in the dtypes they were initialised with.
        return updates, ScaleByAAdaMaxState(
            count=count,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
            prev_update=prev_update,
            prev_grad_sign=prev_grad_sign,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def aadamax(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    variant: Variant = "sign_change",
    mu_dtype: jax.typing.DTypeLike | None = None,
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AAdaMax: AdaMax (Adam with the infinity norm), accelerated as AAdam is.

    .. math::

      m_n = b_1 m_{n-1} + (1 - b_1) g_n, \quad
      v_n = \max(b_2 v_{n-1}, |g_n| + \epsilon), \quad
      a_n = \frac{m_n / (1 - b_1^n)}{v_n},

    and `u_n = b_1 a_n + (1 - b_1) c_n u_{n-1}`, `theta_{n+1} = theta_n - eta_n
    u_n`, with `c_n` as in :func:`aadam_optax.aadam`. `v_n` is not bias
    corrected (the Adam paper, section 7, which has no `eps`); `eps` sits
    inside the maximum, where `optax.adamax` puts it, so `a_n` is AdaMax's.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment, and weight of AdaMax's direction in `u_n`.
      b2: decay of the infinity norm.
      eps: added to `|g_n|` inside the maximum, as in `optax.adamax`.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    References:
      Kingma and Ba, *Adam: A Method for Stochastic Optimization*, section 7,
      arXiv:1412.6980, 2014.

      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

    Examples:
      >>> import jax.numpy as jnp
      >>> from aadam_optax import aadamax
      >>> solver = aadamax(learning_rate=0.1)
      >>> state = solver.init(jnp.zeros(2))
      >>> updates, state = solver.update(jnp.array([4.0, -0.5]), state)
      >>> print(updates.round(4))  # first step: -lr * b1 * g / |g|
      [-0.09  0.09]
    """
    _validation.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_aadamax(
            b1,
            b2,
            eps,
            variant=variant,
            mu_dtype=mu_dtype,
            prev_update_dtype=prev_update_dtype,
        ),
        optax.scale_by_learning_rate(_directions.real(learning_rate)),
    )
