"""The acceleration rule of AAdam, and `accelerate` for any Optax direction.

Every accelerated optimizer in this package (AAdam, AAdaMax, AAMSGrad and
`accelerate(inner)`) calls `accelerated_step`; the rule lives nowhere else.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from aadam_optax import _directions, _validation
from aadam_optax._validation import Variant

SIGN_DTYPE = jnp.int8


def _rule(
    direction: jax.Array,
    grad_sign: jax.Array,
    prev_update: jax.Array,
    prev_grad_sign: jax.Array,
    b1: Any,
    variant: str,
) -> jax.Array:
    """`u_n = b1 * a_n + (1 - b1) * c_n * u_{n-1}` for real arrays.

    The signs are -1, 0 or +1 in the dtype of `direction`; `sign(0) = 0` makes
    the second term vanish on the first step and wherever a gradient is exactly
    zero.
    """
    if variant == "sign":
        # The AAdam text's "very first idea": d follows the current gradient's sign.
        coefficient, memory = grad_sign, prev_update
    elif variant == "sign_change":
        # The text's final rule: +d where the gradient kept its sign, -d where it
        # flipped.
        coefficient, memory = grad_sign * prev_grad_sign, prev_update
    else:
        # "magnitude" (the constructors validate `variant`): the previous
        # step's size is added to, or taken from, the size of the current
        # step, along the current direction (the text: "the value d is
        # actually added or subtracted from the current update step size"),
        # whatever the sign of the previous step.
        coefficient = grad_sign * prev_grad_sign * jnp.sign(direction)
        memory = jnp.abs(prev_update)
    # A zero coefficient contributes exactly 0, even against an infinite or
    # NaN memory (IEEE's 0 * inf is NaN): as sign(0) = 0 means, a zero gradient
    # takes no memory, and a direction that overflowed once must not turn
    # into NaN for good.
    term = jnp.where(coefficient == 0, jnp.zeros_like(memory), coefficient * memory)
    return b1 * direction + (1 - b1) * term


def _pack_complex_signs(grad: jax.Array) -> jax.Array:
    """Signs of the real and imaginary parts, packed as `re + 3 * im` in int8."""
    return (jnp.sign(grad.real) + 3 * jnp.sign(grad.imag)).astype(SIGN_DTYPE)


def _unpack_complex_signs(packed: jax.Array) -> tuple[jax.Array, jax.Array]:
    real = jnp.mod(packed + 1, 3) - 1
    return real, (packed - real) // 3


def _sign_after(grad: jax.Array, update: jax.Array) -> jax.Array:
    """`sign(grad)` as int8, computed only once `update` exists, on CPU.

    Why: under buffer donation the new signs overwrite the old ones in place,
    but the old ones are read to compute `update`. Without a data dependency
    XLA may compute the new signs first and then protects the old ones with two
    full copies (20 MB of temporaries per 1e7 params on CPU, paid in page
    faults on every step). Adding an exact zero derived from one element of
    `update` orders the two at the cost of one scalar, so the numbers are the
    same with or without it.

    Only on CPU, chosen where the step is lowered (`lax.platform_dependent`),
    not from the backend of the process that traces it: a module exported or
    compiled for GPU or TPU from a CPU host carries no trace of it. On GPU the
    ordering would keep the sign out of the multi-output fusion that computes
    `update`. Only with one device: with several, reading one element of a
    sharded array makes the compiler gather it, a collective on every step.
    """

    def plain(grad: jax.Array, update: jax.Array) -> jax.Array:
        return jnp.sign(grad).astype(SIGN_DTYPE)

    def ordered(grad: jax.Array, update: jax.Array) -> jax.Array:
        first = update.reshape(-1)[0]
        # min(|x|, 0) is 0 for every x but NaN, which the where catches: the
        # zero is exact, so sign(grad + zero) == sign(grad) for every grad,
        # -0.0 included.
        zero = jnp.where(jnp.isnan(first), 0, jnp.minimum(jnp.abs(first), 0))
        return jnp.sign(grad + zero.astype(grad.dtype)).astype(SIGN_DTYPE)

    if update.size == 0 or jax.device_count() > 1:
        return plain(grad, update)
    return jax.lax.platform_dependent(grad, update, cpu=ordered, default=plain)


def _accelerate_leaf(
    direction: jax.Array,
    grad: jax.Array,
    prev_update: jax.Array,
    prev_grad_sign: jax.Array,
    b1: Any,
    variant: str,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One leaf: returns (update, new prev_update, new prev_grad_sign).

    Python and NumPy scalars are taken as arrays, as Optax's own
    transformations take them.
    """
    direction, grad = jnp.asarray(direction), jnp.asarray(grad)
    compute_dtype = jnp.result_type(direction, prev_update)
    prev = prev_update.astype(compute_dtype)
    if jnp.iscomplexobj(direction) or jnp.iscomplexobj(grad):
        # A complex number is accelerated as the pair of reals it is made of, each
        # part with its own sign history.
        real_dtype = jnp.finfo(compute_dtype).dtype
        direction = direction.astype(compute_dtype)
        prev_real_sign, prev_imag_sign = _unpack_complex_signs(prev_grad_sign)
        parts = [
            _rule(
                part(direction),
                jnp.sign(part(grad)).astype(real_dtype),
                part(prev),
                part_prev_sign.astype(real_dtype),
                b1,
                variant,
            )
            for part, part_prev_sign in (
                (jnp.real, prev_real_sign),
                (jnp.imag, prev_imag_sign),
            )
        ]
        update = jax.lax.complex(*parts)
        grad_sign = _pack_complex_signs(grad)
    else:
        update = _rule(
            direction.astype(compute_dtype),
            jnp.sign(grad).astype(compute_dtype),
            prev,
            prev_grad_sign.astype(compute_dtype),
            b1,
            variant,
        )
        grad_sign = _sign_after(grad, update)
    if not jnp.iscomplexobj(grad):
        # A complex direction for a real param (a complex mu_dtype) has no
        # imaginary part: the gradients that made it are real.
        update = jnp.real(update)
    return update.astype(grad.dtype), update.astype(prev_update.dtype), grad_sign


def accelerated_step(
    directions: Any,
    grads: Any,
    prev_updates: Any,
    prev_grad_signs: Any,
    b1: Any,
    variant: str,
) -> tuple[Any, Any, Any]:
    """Applies the acceleration rule leaf by leaf.

    Args:
      directions: the base direction `a_n` (Adam's, AdaMax's, any optax one).
      grads: the gradients `g_n` whose signs drive the rule.
      prev_updates: `u_{n-1}`, the previous direction before the learning rate.
      prev_grad_signs: `sign(g_{n-1})` as int8 (0 before the first step).
      b1: the weight of the current direction.
      variant: one of `"sign_change"`, `"sign"`, `"magnitude"`.

    Returns:
      `(updates, prev_updates, prev_grad_signs)` for step `n`: the updates in the
      gradients' dtypes, the new `u_n` in the dtypes of `prev_updates`, and the
      new int8 signs.
    """
    b1 = _directions.real(b1)
    triples = jax.tree.map(
        lambda a, g, u, s: _accelerate_leaf(a, g, u, s, b1, variant),
        directions,
        grads,
        prev_updates,
        prev_grad_signs,
    )
    return jax.tree.transpose(
        jax.tree.structure(directions), jax.tree.structure((0, 0, 0)), triples
    )


def zeros_like(params: Any, dtype: Any = None) -> Any:
    """Zeros shaped like `params`, in `dtype` (`None`: the params' dtypes).

    A real `dtype` becomes its complex counterpart for complex params: stored
    in a real dtype, a complex value would lose its imaginary part.
    """

    def zeros(param: jax.Array) -> jax.Array:
        leaf_dtype = dtype
        if leaf_dtype is not None and jnp.iscomplexobj(param):
            leaf_dtype = jnp.promote_types(leaf_dtype, jnp.complex64)
        return jnp.zeros_like(param, dtype=leaf_dtype)

    return jax.tree.map(zeros, params)


def init_acceleration(params: Any, prev_update_dtype: Any = None) -> tuple[Any, Any]:
    """Zero `prev_update` (u_0 = 0) and zero signs (sign(g_0) := 0)."""
    _validation.check_params(params)
    prev_update = zeros_like(params, prev_update_dtype)
    prev_grad_sign = optax.tree.zeros_like(params, dtype=SIGN_DTYPE)
    return prev_update, prev_grad_sign


class AccelerateState(NamedTuple):
    """State of `accelerate`.

    Attributes:
      inner_state: the state of the wrapped transformation.
      prev_update: `u_{n-1}`, the previous accelerated direction before the
        learning rate, shaped like the params.
      prev_grad_sign: `sign(g_{n-1})` as int8 (-1, 0, +1); complex params keep
        the signs of both parts packed as `re + 3 * im`.
    """

    inner_state: optax.OptState
    prev_update: optax.Updates
    prev_grad_sign: optax.Updates


def accelerate(
    inner: optax.GradientTransformation,
    b1: jax.typing.ArrayLike = 0.9,
    *,
    variant: Variant = "sign_change",
    prev_update_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Accelerates the direction of any Optax transformation the AAdam way.

    With `a_n` the direction `inner` returns for the gradient `g_n`,

    .. math::

      u_n = b_1 a_n + (1 - b_1)\, c_n\, u_{n-1}, \qquad u_0 = 0,

    where `c_n = sign(g_n) sign(g_{n-1})` for ``variant="sign_change"``,
    `c_n = sign(g_n)` for ``"sign"``, and for ``"magnitude"`` the memory term is
    `(1 - b_1) sign(g_n) sign(g_{n-1}) |u_{n-1}| sign(a_n)`. `sign(0) = 0`, so the
    first step is `b_1 a_1`. The returned direction is `u_n`; chain a
    learning-rate stage after it.

    `optax.chain(accelerate(optax.scale_by_adam(b1=b1), b1=b1),
    optax.scale_by_learning_rate(lr))` is `aadam_optax.aadam(lr, b1=b1)` to
    rounding, with one exception: at `eps = eps_root = 0`, for a component
    whose gradients have all been zero, `optax.scale_by_adam` divides 0 by 0
    and returns NaN, and so does its accelerated direction; `aadam` defines
    that direction as 0. A zero coefficient `c_n` (a zero gradient) then
    contributes nothing, so such a NaN leaves `prev_update` at the next step
    whose gradient is zero or first nonzero.

    Args:
      inner: the transformation whose direction is accelerated (for example
        `optax.scale_by_adam()`, `optax.trace(0.9)`, `optax.scale_by_lion()`).
      b1: weight of the current direction, in (0, 1); `1 - b1` weighs the memory.
      variant: how the gradient's sign drives the memory: ``"sign_change"``
        (default), ``"sign"`` or ``"magnitude"``.
      prev_update_dtype: dtype in which `prev_update` is stored; `None` keeps
        the params' dtype. A low-precision dtype such as `jnp.bfloat16` saves
        memory.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state
      :class:`AccelerateState`.

    References:
      Tato and Nkambou, *Improving Adam Optimizer*, ICLR 2018 Workshop.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from aadam_optax import accelerate
      >>> opt = optax.chain(
      ...     accelerate(optax.trace(decay=0.9)), optax.scale_by_learning_rate(0.1)
      ... )
      >>> state = opt.init(jnp.zeros(2))
      >>> updates, state = opt.update(jnp.array([1.0, -1.0]), state)
      >>> print(updates)  # the first step is b1 * inner's: -0.1 * 0.9 * g
      [-0.09  0.09]
    """
    _validation.check_transformation("inner", inner, "optax.scale_by_adam()")
    _validation.check_acceleration_weight(b1)
    _validation.check_variant(variant)
    _validation.check_float_dtype("prev_update_dtype", prev_update_dtype)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> AccelerateState:
        prev_update, prev_grad_sign = init_acceleration(params, prev_update_dtype)
        return AccelerateState(inner.init(params), prev_update, prev_grad_sign)

    def update_fn(
        updates: optax.Updates,
        state: AccelerateState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, AccelerateState]:
        _validation.check_matching_tree(updates, state.prev_update)
        directions, inner_state = inner.update(
            updates, state.inner_state, params, **extra_args
        )
        new_updates, prev_update, prev_grad_sign = accelerated_step(
            directions, updates, state.prev_update, state.prev_grad_sign, b1, variant
        )
        return new_updates, AccelerateState(inner_state, prev_update, prev_grad_sign)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
