"""AAdaMax: AdaMax's infinity-norm direction, accelerated."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from aadam_optax import _directions, _validation
from aadam_optax._aadam import (
    ScaleByAAdamState,
    accelerate_and_store,
    check_adam_arguments,
    init_state,
)
from aadam_optax._acceleration import Variant


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
      eps: added to the infinity norm in the denominator.
      variant: ``"sign_change"`` (default), ``"sign"`` or ``"magnitude"``.
      mu_dtype: dtype of the first moment; `None` keeps the params' dtype.
      prev_update_dtype: dtype of `prev_update`; `None` keeps the params' dtype.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state
      :class:`aadam_optax.ScaleByAAdamState` (`nu` holds the infinity norm).
    """
    check_adam_arguments(b1, b2, eps, 0.0, variant, mu_dtype, prev_update_dtype)

    def init_fn(params: optax.Params) -> ScaleByAAdamState:
        return init_state(ScaleByAAdamState, params, mu_dtype, prev_update_dtype)

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
        nu = jax.tree.map(
            lambda g, v: jnp.maximum(b2 * v, jnp.abs(g)), updates, state.nu
        )
        directions = _directions.divide(
            _directions.bias_corrected(mu, b1, count, True),
            jax.tree.map(lambda v: v + eps, nu),
        )
        return accelerate_and_store(
            directions, updates, state, b1, variant, count=count, mu=mu, nu=nu
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
      v_n = \max(b_2 v_{n-1}, |g_n|), \quad
      a_n = \frac{m_n / (1 - b_1^n)}{v_n + \epsilon},

    and `u_n = b_1 a_n + (1 - b_1) c_n u_{n-1}`, `theta_{n+1} = theta_n - eta_n
    u_n`, with `c_n` as in :func:`aadam_optax.aadam`. `v_n` is not bias
    corrected (the Adam paper, section 7). `eps` is added outside the maximum,
    where `optax.adamax` adds it inside; with `eps = 0` the two agree.

    Args:
      learning_rate: a fixed learning rate `eta` (>= 0) or a schedule.
      b1: decay of the first moment, and weight of AdaMax's direction in `u_n`.
      b2: decay of the infinity norm.
      eps: added to the infinity norm in the denominator.
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
        optax.scale_by_learning_rate(learning_rate),
    )
