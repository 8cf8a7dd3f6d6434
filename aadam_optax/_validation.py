"""Checks of constructor arguments and of the trees that reach a transformation.

Concrete values (Python numbers, NumPy and JAX arrays that hold values,
strings, dtypes) are checked when an optimizer is built, so a mistake fails at
the line that made it. Traced values pass through untouched:
`optax.inject_hyperparams` rebuilds the optimizer with them inside `jax.jit`,
where no Python branch may depend on them.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

# How the gradient's sign drives AAdam's memory of past updates; the rule in
# `_acceleration` gives each its meaning.
Variant = Literal["sign_change", "sign", "magnitude"]
VARIANTS: tuple[str, ...] = get_args(Variant)


def _concrete_values(name: str, value: Any) -> np.ndarray | None:
    """`value`'s numbers as a float64 array, or None for a traced value.

    NumPy and JAX arrays are checked element by element like Python numbers.
    A complex array is accepted when its imaginary part is 0:
    `optax.inject_hyperparams` casts hyperparameters to complex when a param is
    complex.
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a number, got the boolean {value!r}.")
    if isinstance(value, jax.core.Tracer):
        return None
    if not isinstance(value, numbers.Number | np.ndarray | np.generic | jax.Array):
        raise TypeError(
            f"{name} must be a number or an array, got {type(value).__name__} "
            f"{value!r}."
        )
    array = np.asarray(value)
    if array.dtype == np.bool_:
        raise TypeError(f"{name} must be a number, got the boolean array {value!r}.")
    # jnp.issubdtype knows bfloat16 and the other ml_dtypes; NumPy does not.
    if not jnp.issubdtype(array.dtype, jnp.number):
        raise TypeError(f"{name} must be a number, got {array.dtype} {value!r}.")
    if np.iscomplexobj(array):
        if np.any(array.imag != 0):
            raise TypeError(
                f"{name} must be a number with no imaginary part, got {value!r}."
            )
        array = array.real
    return array.astype(np.float64)


def _rounding_hint(value: Any, values: np.ndarray) -> str:
    """Why a 16-bit array hyperparameter may be exactly 1."""
    if (
        isinstance(value, jax.Array)
        and jnp.issubdtype(value.dtype, jnp.inexact)
        and jnp.finfo(value.dtype).bits == 16
        and np.any(values == 1.0)
    ):
        return (
            " optax.inject_hyperparams casts hyperparameters to the params' "
            "dtype, where a value this close to 1 rounds to 1 (0.999 in "
            "bfloat16, 0.9999 in float16): pass hyperparam_dtype=jnp.float32."
        )
    return ""


def check_decay_rate(name: str, value: Any) -> None:
    """A decay rate (`b2`) must lie in [0, 1)."""
    values = _concrete_values(name, value)
    if values is not None and not np.all((values >= 0.0) & (values < 1.0)):
        raise ValueError(
            f"{name} must be in [0, 1), got {value!r}.{_rounding_hint(value, values)}"
        )


def check_acceleration_weight(value: Any) -> None:
    """`b1` must lie in (0, 1).

    It is the first moment's decay and the weight of the current direction in
    `u_n = b1 a_n + (1 - b1) c_n u_{n-1}`: from `u_0 = 0` a zero weight keeps
    `u_n = 0`, and at 1 the first moment never leaves 0.
    """
    values = _concrete_values("b1", value)
    if values is None or np.all((values > 0.0) & (values < 1.0)):
        return
    reason = ""
    if np.any(values == 0.0):
        reason = (
            ": at b1 = 0 the current direction gets no weight in the accelerated "
            "update, which then stays zero forever"
        )
    elif np.any(values >= 1.0):
        reason = (
            ": at b1 = 1 the first moment m_n = b1 m_{n-1} + (1 - b1) g_n never "
            "leaves 0 (and above 1 it grows without bound)"
        )
    raise ValueError(
        f"b1 must be in (0, 1), got {value!r}{reason}.{_rounding_hint(value, values)}"
    )


def check_non_negative(name: str, value: Any) -> None:
    """`eps`, `eps_root`, a learning rate or a weight decay: finite and >= 0."""
    values = _concrete_values(name, value)
    if values is not None and not np.all((values >= 0.0) & np.isfinite(values)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def check_schedule_or_non_negative(name: str, value: Any) -> None:
    """A learning rate or weight decay: a finite number >= 0, or a schedule."""
    if callable(value):
        return
    check_non_negative(name, value)


def check_learning_rate(value: Any) -> None:
    check_schedule_or_non_negative("learning_rate", value)


def check_variant(variant: Any) -> None:
    if not isinstance(variant, str) or variant not in VARIANTS:
        allowed = ", ".join(repr(name) for name in VARIANTS)
        raise ValueError(f"variant must be one of {allowed}; got {variant!r}.")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")


def optax_flag(name: str, value: Any) -> bool:
    """An Optax switch (`nesterov`, `bias_correction_mu`): what Optax's `if`
    reads it as, for the values that mean a boolean (a bool, a NumPy or JAX
    boolean scalar, the integers 0 and 1). A string or None is refused: Optax
    would read "False" as true."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if (
        isinstance(value, np.ndarray | jax.Array)
        and not isinstance(value, jax.core.Tracer)
        and np.shape(value) == ()
        and (jnp.issubdtype(value.dtype, jnp.bool_) or value in (0, 1))
    ):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}.")


def check_transformation(name: str, value: Any, example: str) -> None:
    """An optimizer argument must be a built transformation, not its factory.

    Anything with `init` and `update` methods counts, as Optax's own wrappers
    (`optax.MultiSteps`) are not `GradientTransformation` instances.
    """
    if not all(callable(getattr(value, method, None)) for method in ("init", "update")):
        raise TypeError(
            f"{name} must be an optax.GradientTransformation such as {example}, "
            f"got {value!r}. Pass the transformation, not the function that "
            "builds it."
        )


def check_float_dtype(name: str, dtype: Any, complex_allowed: bool = False) -> None:
    """An optional state dtype must be a floating-point dtype (or None).

    `mu_dtype` may also be complex, as Optax allows.
    """
    if dtype is None:
        return
    kind = "floating-point or complex" if complex_allowed else "floating-point"
    try:
        canonical = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(
            f"{name} must be None or a {kind} dtype, got {dtype!r}."
        ) from error
    allowed = jnp.inexact if complex_allowed else jnp.floating
    if not jnp.issubdtype(canonical, allowed):
        raise TypeError(
            f"{name} must be None or a {kind} dtype such as jnp.bfloat16 "
            f"or jnp.float32, got {canonical}."
        )


def check_params(params: Any, who: str = "AAdam") -> None:
    """Integer or boolean parameters cannot be trained by a gradient step."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"The parameter at {jax.tree_util.keystr(path) or 'the root'} has "
                f"dtype {dtype}; {who} needs floating-point or complex parameters. "
                "Exclude it with optax.masked or optax.multi_transform, or cast it."
            )


def check_matching_tree(updates: Any, state_tree: Any) -> None:
    """The gradients must have the structure and shapes the state was built for."""
    updates_structure = jax.tree.structure(updates)
    state_structure = jax.tree.structure(state_tree)
    # jaxlib ships no stub for PyTreeDef, so mypy cannot type its comparison.
    if updates_structure != state_structure:  # type: ignore[operator]
        raise ValueError(
            "The gradient tree does not match the optimizer state.\n"
            f"  gradients: {updates_structure}\n"
            f"  state:     {state_structure}\n"
            "Initialise the optimizer with params of the same structure as the "
            "gradients passed to update."
        )
    for (path, update), moment in zip(
        jax.tree_util.tree_leaves_with_path(updates),
        jax.tree.leaves(state_tree),
        strict=True,
    ):
        if jnp.shape(update) != jnp.shape(moment):
            where = f"at {jax.tree_util.keystr(path)}" if path else "(a single array)"
            raise ValueError(
                f"The gradient {where} has shape "
                f"{jnp.shape(update)}, but the optimizer state was initialised "
                f"for shape {jnp.shape(moment)}."
            )


def check_adam_family(
    b1: Any,
    b2: Any,
    eps: Any,
    eps_root: Any,
    variant: Any,
    mu_dtype: Any,
    prev_update_dtype: Any,
) -> None:
    """The arguments every accelerated Adam-family transformation shares."""
    check_acceleration_weight(b1)
    check_decay_rate("b2", b2)
    check_non_negative("eps", eps)
    check_non_negative("eps_root", eps_root)
    check_variant(variant)
    check_float_dtype("mu_dtype", mu_dtype, complex_allowed=True)
    check_float_dtype("prev_update_dtype", prev_update_dtype)
