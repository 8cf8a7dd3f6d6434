"""A compiled optimisation loop with the tutorial's stopping rules."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aadam_optax import _validation


class MinimizeInfo(NamedTuple):
    """What :func:`minimize` reports about its run.

    Attributes:
      steps: the number of updates applied, int32 (between 1 and `max_steps`).
      converged: bool, whether the last update moved the params by at most
        `tol` (always `False` when `tol` is `None`).
      loss: `fun` at the returned params (the loss of the last point evaluated:
        the loop evaluates the loss after each update, ready for the next).
      aux: the auxiliary output of `fun` at the returned params when
        `has_aux=True`, else `None`.
    """

    steps: jax.Array
    converged: jax.Array
    loss: jax.Array
    aux: Any = None


class _Carry(NamedTuple):
    params: optax.Params
    state: optax.OptState
    loss: jax.Array
    grad: optax.Updates
    aux: Any
    steps: jax.Array
    converged: jax.Array


def minimize(
    fun: Callable[..., Any],
    params: optax.Params,
    optimizer: optax.GradientTransformation,
    *,
    max_steps: int,
    tol: jax.typing.ArrayLike | None = None,
    has_aux: bool = False,
) -> tuple[optax.Params, optax.OptState, MinimizeInfo]:
    r"""Minimises `fun` with any Optax optimizer in one compiled loop.

    From `theta_0 = params` the loop takes
    `theta_{n+1} = theta_n + optimizer.update(grad fun(theta_n), ...)` and stops
    after the first `n` that satisfies either of the tutorial's termination rules

    .. math::

      n = \text{max\_steps} \qquad \text{or} \qquad
      \lVert \theta_{n+1} - \theta_n \rVert_2 \le \text{tol},

    where the norm is the global Euclidean norm over every leaf of the pytree,
    measured on the params actually stored (after `optax.apply_updates` and its
    cast to the params' dtype). An update that leaves the params exactly where
    they were while the gradient is nonzero does not count as convergence: the
    optimizer chose not to step (a learning-rate warm-up from 0,
    `optax.MultiSteps` accumulating, `optax.apply_if_finite` skipping). The
    loop is a single `jax.lax.while_loop`: no Python runs per step, and the
    whole call can sit inside `jax.jit`.

    Each update is called as
    ``optimizer.update(grad, state, params, value=loss, grad=grad,
    value_fn=...)``, Optax's convention for optimizers that need the objective
    (``optax.lbfgs`` and its line search); other optimizers ignore the extras.

    Args:
      fun: the objective, `fun(params) -> scalar loss`, or
        `fun(params) -> (loss, aux)` when `has_aux=True`.
      params: the starting point, a pytree of floating-point arrays.
      optimizer: any Optax gradient transformation.
      max_steps: the most updates to apply, a positive Python int (static).
      tol: stop once an update moves the params by at most this much in
        global L2 norm; `None` runs exactly `max_steps` updates. May be a
        traced array.
      has_aux: whether `fun` returns `(loss, aux)`.

    Returns:
      `(params, state, info)`: the final params, the optimizer state after the
      last update, and a :class:`MinimizeInfo` whose `loss` (and `aux`) is
      `fun` evaluated at the returned params.

    Raises:
      ValueError: if `max_steps` is not a positive int, or `tol` is negative.
      TypeError: if `optimizer` is not a transformation or `has_aux` not a bool.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import minimize
      >>> def f(x):
      ...     return jnp.sum((x - 3.0) ** 2)
      >>> params, state, info = minimize(
      ...     f, jnp.array(0.0), optax.sgd(0.25), max_steps=100, tol=1e-6
      ... )
      >>> # Each sgd step halves the distance to 3, so update n moves x by
      >>> # 3 * 2**-n: the first move <= 1e-6 is update 22.
      >>> print(f"{float(params):.4f}", bool(info.converged), int(info.steps))
      3.0000 True 22
    """
    _validation.check_transformation("optimizer", optimizer, "aadam_optax.aadam(1e-3)")
    _validation.check_bool("has_aux", has_aux)
    _check_max_steps(max_steps)
    _check_tol(tol)
    optimizer = optax.with_extra_args_support(optimizer)
    value_and_grad = jax.value_and_grad(fun, has_aux=has_aux)

    def evaluate(theta: optax.Params) -> tuple[jax.Array, optax.Updates, Any]:
        if has_aux:
            (loss, aux), grad = value_and_grad(theta)
        else:
            (loss, grad), aux = value_and_grad(theta), None
        return loss, grad, aux

    def value_fn(theta: optax.Params) -> jax.Array:
        # Line searches want the bare scalar, without aux.
        return fun(theta)[0] if has_aux else fun(theta)

    def cond_fn(carry: _Carry) -> jax.Array:
        return (carry.steps < max_steps) & jnp.logical_not(carry.converged)

    def body_fn(carry: _Carry) -> _Carry:
        updates, state = optimizer.update(
            carry.grad,
            carry.state,
            carry.params,
            value=carry.loss,
            grad=carry.grad,
            value_fn=value_fn,
        )
        params = optax.apply_updates(carry.params, updates)
        if tol is None:
            converged = jnp.zeros([], bool)
        else:
            moved = optax.tree.norm(jax.tree.map(jnp.subtract, params, carry.params))
            # A zero move with a nonzero gradient is an optimizer that chose not
            # to step (a warm-up at learning rate 0, MultiSteps accumulating,
            # apply_if_finite skipping), not a converged run; at a stationary
            # point the gradient is zero too.
            stepped = (moved > 0) | (optax.tree.norm(carry.grad) == 0)
            converged = (moved <= tol) & stepped
        # Evaluating here, not at the top of the next step, leaves the loss at
        # the returned params in the carry at no extra cost.
        loss, grad, aux = evaluate(params)
        return _Carry(params, state, loss, grad, aux, carry.steps + 1, converged)

    loss, grad, aux = evaluate(params)
    init = _Carry(
        params,
        optimizer.init(params),
        loss,
        grad,
        aux,
        jnp.zeros([], jnp.int32),
        jnp.zeros([], bool),
    )
    final = jax.lax.while_loop(cond_fn, body_fn, init)
    info = MinimizeInfo(final.steps, final.converged, final.loss, final.aux)
    return final.params, final.state, info


def _check_max_steps(max_steps: Any) -> None:
    if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral):
        raise ValueError(
            f"max_steps must be a positive Python int (it sets the loop's "
            f"static bound), got {max_steps!r}."
        )
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}.")


def _check_tol(tol: Any) -> None:
    if tol is None or isinstance(tol, jax.core.Tracer):
        return
    try:
        value = np.asarray(tol)
    except Exception as error:  # noqa: BLE001 - report any unusable tol
        raise ValueError(f"tol must be None or a number >= 0, got {tol!r}.") from error
    if value.shape != () or not np.issubdtype(value.dtype, np.number):
        raise ValueError(f"tol must be None or a scalar >= 0, got {tol!r}.")
    if not value >= 0:
        raise ValueError(f"tol must be None or >= 0, got {tol!r}.")
