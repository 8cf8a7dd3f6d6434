"""Differential tests against Optax itself: a drop-in replacement in fact.

Each accelerated optimizer runs next to its Optax counterpart on the same
random configuration and gradient sequence, inside the same Optax wrapper:
`scale_by_aadam` / `optax.scale_by_adam`, `scale_by_aadamax` /
`optax.scale_by_adamax`, `scale_by_aamsgrad` / `optax.scale_by_amsgrad`, and
the aliases against `optax.adam`, `adamw`, `adamax` and `amsgrad`. After every
step:

* `count`, `mu`, `nu` and `nu_max` are Optax's bit for bit (to 2 units in
  the last place where a wrapper computes the gradient in the same program:
  XLA may fuse two different programs' arithmetic differently);
* the direction obeys `u_n = b1 a_n + (1 - b1) c_n u_{n-1}` (docs/algorithms.md)
  with `a_n` taken from Optax's own update, to rounding, with the same
  non-finite pattern wherever Optax's `a_n` is finite;
* the state's and the updates' dtypes, shapes and shardings stay what they were.

Any other difference must be a row of the deviations table in
docs/deviations.md; the table's ids are the keys of `DEVIATIONS` below, each
checked on an example of its own.

The cautious optimizers mask a direction and keep no state of their own, so
they are run next to the optimizer they mask: `cautious_adamw` next to
`optax.adamw` (and `optax.scale_by_adam` for its direction), `cautious_aadamw`
next to `aadamw`. The state is the unmasked optimizer's bit for bit (to 2
units in the last place for AAdam's memory, and under the wrappers that
compute the gradient, as above), and the update is `-lr_n (mask(d_n) + wd_n
theta)` with `d_n` the unmasked direction and `mask` the float64 reference of
tests/cautious_reference.py.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import pathlib
import re
from collections.abc import Callable
from typing import Any

import cautious_reference as cref
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import aadam_optax as ao

ROOT = pathlib.Path(__file__).resolve().parents[1]

# family -> (ours, Optax's, the state classes whose moments must agree)
FAMILIES: dict[str, tuple[Callable[..., Any], Callable[..., Any], type, type]] = {
    "adam": (
        ao.scale_by_aadam,
        optax.scale_by_adam,
        ao.ScaleByAAdamState,
        optax.ScaleByAdamState,
    ),
    "adamax": (
        ao.scale_by_aadamax,
        optax.scale_by_adamax,
        ao.ScaleByAAdaMaxState,
        optax.ScaleByAdamState,
    ),
    "amsgrad": (
        ao.scale_by_aamsgrad,
        optax.scale_by_amsgrad,
        ao.ScaleByAAMSGradState,
        optax.ScaleByAmsgradState,
    ),
}
WRAPPERS = (
    "none",
    "inject",
    "inject_float32",
    "multi_steps",
    "masked",
    "clip",
    "apply_if_finite",
    "cond",
)
# Wrappers under which the gradient that reaches the transformation is the one
# passed to update (clipping rescales it, MultiSteps averages it).
RAW_GRADIENT_WRAPPERS = {"none", "inject", "inject_float32", "masked", "cond"}
PARAM_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
MASK = {"w": True, "b": False}
SHAPES = {"w": (5,), "b": (3,)}
# Gradient magnitudes: zeros, tiny values that underflow when squared, ordinary
# ones, huge ones whose square overflows, and non-finite ones (rarer).
MAGNITUDES = (0.0, 1e-25, 1e-3, 0.5, 1.0, 3.0, 1e30, 1.0, 0.5, np.inf, np.nan)


@dataclasses.dataclass(frozen=True)
class Case:
    family: str
    param_dtype: str
    wrapper: str
    variant: str
    options: tuple[tuple[str, Any], ...]  # Optax's arguments, shared by both

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    family = draw(st.sampled_from(sorted(FAMILIES)))
    options: dict[str, Any] = {
        "b1": draw(st.sampled_from([0.5, 0.9, 0.99])),
        "b2": draw(st.sampled_from([0.0, 0.9, 0.999])),
        "eps": draw(st.sampled_from([0.0, 1e-8, 1e-3])),
    }
    if family != "adamax":
        options["eps_root"] = draw(st.sampled_from([0.0, 1e-8]))
        options["mu_dtype"] = draw(
            st.sampled_from([None, jnp.bfloat16, jnp.float32, jnp.complex64])
        )
    if family == "adam":
        options["nesterov"] = draw(st.booleans())
    if family == "amsgrad":
        options["bias_correction_mu"] = draw(st.booleans())
        options["bias_correction_nu"] = draw(st.booleans())
    return Case(
        family=family,
        param_dtype=draw(st.sampled_from(PARAM_DTYPES)),
        wrapper=draw(st.sampled_from(WRAPPERS)),
        variant=draw(st.sampled_from(ao.VARIANTS)),
        options=tuple(options.items()),
    )


@st.composite
def gradient_sequences(draw: st.DrawFn) -> list[dict[str, np.ndarray]]:
    """3 to 6 steps of complex128 gradients (cast to the params' dtype later)."""
    steps = draw(st.integers(3, 6))

    def values(size: int) -> np.ndarray:
        parts = [
            np.array(
                draw(
                    st.lists(
                        st.tuples(
                            st.sampled_from(MAGNITUDES), st.sampled_from([1, -1])
                        ),
                        min_size=size,
                        max_size=size,
                    )
                )
            )
            for _ in range(2)
        ]
        values = np.empty(size, np.complex128)
        # Assigned part by part: real + 1j * imag would turn an infinite
        # imaginary part into a NaN real part.
        values.real, values.imag = (p[:, 0] * p[:, 1] for p in parts)
        return values

    return [{k: values(shape[0]) for k, shape in SHAPES.items()} for _ in range(steps)]


def _wrap(
    factory: Callable[..., Any], kwargs: dict[str, Any], wrapper: str
) -> optax.GradientTransformation:
    if wrapper in ("inject", "inject_float32"):
        # Booleans and dtypes are not hyperparameters to inject (Optax would
        # turn them into arrays, or call a dtype like a schedule).
        static = tuple(
            k for k, v in kwargs.items() if isinstance(v, bool | str) or k == "mu_dtype"
        )
        dtype = jnp.float32 if wrapper == "inject_float32" else None
        return optax.inject_hyperparams(
            factory, static_args=static, hyperparam_dtype=dtype
        )(**kwargs)
    tx = factory(**kwargs)
    if wrapper == "multi_steps":
        return optax.MultiSteps(tx, every_k_schedule=2)
    if wrapper == "masked":
        return optax.masked(tx, MASK)
    if wrapper == "clip":
        return optax.chain(optax.clip_by_global_norm(1.0), tx)
    if wrapper == "apply_if_finite":
        return optax.apply_if_finite(tx, max_consecutive_errors=2)
    if wrapper == "cond":
        return _cond(tx)
    assert wrapper == "none"
    return tx


def _cond(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """Steps only when the first gradient component is >= 0, in a `lax.cond`."""

    def update(updates: Any, state: Any, params: Any = None) -> Any:
        def step() -> Any:
            return tx.update(updates, state, params)

        def skip() -> Any:
            # Zeros of whatever dtype the step returns (Optax's updates can be
            # complex for real params, see stable-dtypes).
            shapes = jax.eval_shape(step)[0]
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), state

        return jax.lax.cond(jnp.real(updates["w"][0]) >= 0, step, skip)

    return optax.GradientTransformation(tx.init, update)


def _inner(state: Any, cls: type) -> Any:
    """The one state of class `cls` somewhere inside a wrapper's state."""
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls))
        if isinstance(node, cls)
    ]
    assert len(found) == 1, found
    return found[0]


def _run(
    tx: optax.GradientTransformation, params: Any, grads: list[Any]
) -> tuple[list[Any], list[Any]]:
    """The states before and after every step, and every step's updates."""
    states, updates = [tx.init(params)], []
    step = jax.jit(tx.update)
    for grad in grads:
        update, state = step(grad, states[-1], params)
        states.append(state)
        updates.append(update)
    return states, updates


def _unpack_signs(packed: np.ndarray, complex_param: bool) -> np.ndarray:
    packed = packed.astype(np.int64)
    if not complex_param:
        return packed.astype(np.float64)
    real = np.mod(packed + 1, 3) - 1
    return real + 1j * ((packed - real) // 3)


def _parts(x: np.ndarray) -> list[np.ndarray]:
    x = np.asarray(x)
    return [x.real, x.imag] if np.iscomplexobj(x) else [x]


def _expected_direction(
    direction: np.ndarray,
    prev_update: np.ndarray,
    sign: np.ndarray,
    prev_sign: np.ndarray,
    b1: float,
    variant: str,
) -> list[np.ndarray]:
    """`u_n` from the rule in float64, part by part, as docs/algorithms.md says."""
    expected = []
    for a, u, s, p in zip(
        _parts(direction),
        _parts(prev_update.astype(direction.dtype)),
        _parts(sign),
        _parts(prev_sign),
        strict=True,
    ):
        if variant == "magnitude":
            coefficient, memory = s * p * np.sign(a), np.abs(u)
        elif variant == "sign":
            coefficient, memory = s, u
        else:
            coefficient, memory = s * p, u
        with np.errstate(invalid="ignore", over="ignore"):
            term = np.where(coefficient == 0, 0.0, coefficient * memory)
            expected.append(b1 * a + (1 - b1) * term)
    return expected


def _assert_bitwise(ours: Any, theirs: Any, what: str) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == theirs.dtype, (what, ours.dtype, theirs.dtype)
    assert ours.shape == theirs.shape, what
    for a, b in zip(_parts(ours), _parts(theirs), strict=True):
        nan = np.isnan(a)
        np.testing.assert_array_equal(nan, np.isnan(b), err_msg=what)
        assert a[~nan].tobytes() == b[~nan].tobytes(), (what, a, b)


def _assert_within_ulps(ours: Any, theirs: Any, what: str, ulps: int = 2) -> None:
    """Bitwise but for a few units in the last place.

    Where the gradient that reaches the moments is computed in the same
    compiled program (MultiSteps' mean, clipping's scale), XLA fuses it with
    the moment's update differently in two different programs (a multiply and
    an add contracted or not), so the last bit may differ: rounding, not
    arithmetic.
    """
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, what
    for a, b in zip(_parts(ours), _parts(theirs), strict=True):
        a, b = a.astype(np.float64), b.astype(np.float64)
        for pattern in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(pattern(a), pattern(b), err_msg=what)
        finite = np.isfinite(a)
        spacing = np.spacing(np.abs(b[finite]).astype(ours.real.dtype))
        assert np.all(np.abs(a - b)[finite] <= ulps * spacing.astype(np.float64)), what


def _dtype_eps(dtype: Any) -> float:
    return float(jnp.finfo(jnp.dtype(dtype)).eps)


def _check_moments(
    ours: Any, theirs: Any, case: Case, deviations: set[str], initial: Any
) -> bool:
    """Bitwise, but for the dtypes the deviations table names.

    Returns whether every moment was bitwise Optax's.
    """
    bitwise = True
    fields = ["mu", "nu"] + (["nu_max"] if case.family == "amsgrad" else [])
    _assert_bitwise(ours.count, theirs.count, "count")
    for field in fields:
        for (path, mine), other, first in zip(
            jax.tree_util.tree_leaves_with_path(getattr(ours, field)),
            jax.tree.leaves(getattr(theirs, field)),
            jax.tree.leaves(getattr(initial, field)),
            strict=True,
        ):
            what = f"{field}{jax.tree_util.keystr(path)}"
            # Ours keeps the dtype it was initialised with (stable-dtypes).
            assert mine.dtype == first.dtype, (what, mine.dtype, first.dtype)
            if mine.dtype == other.dtype and not _complex_hyperparameters(case, mine):
                if case.wrapper in RAW_GRADIENT_WRAPPERS:
                    _assert_bitwise(mine, other, what)
                else:
                    _assert_within_ulps(mine, other, what)
                continue
            if mine.dtype == other.dtype:
                # Optax multiplied by complex hyperparameters (stable-dtypes):
                # an inf times (b + 0j) has a NaN imaginary part, which the
                # next step spreads to the real part.
                deviations.add("stable-dtypes")
                mine, other = np.asarray(mine), np.asarray(other)
                clean = ~np.isnan(other)
                np.testing.assert_allclose(
                    mine[clean], other[clean], rtol=4 * _dtype_eps(mine.dtype)
                )
                continue
            # A real mu_dtype on complex params (complex-mu-dtype), or a dtype
            # Optax changed between steps (stable-dtypes): the same values to
            # the rounding of the narrower dtype.
            bitwise = False
            if np.iscomplexobj(mine) and not np.iscomplexobj(other):
                deviations.add("complex-mu-dtype")
                mine = np.real(mine)
            else:
                deviations.add("stable-dtypes")
            mine, other = np.asarray(mine), np.asarray(other)
            rtol = 16 * max(_dtype_eps(mine.dtype), _dtype_eps(other.dtype))
            # What the narrower dtype cannot hold (a float16 moment of 1e-9)
            # it flushes to 0.
            tiny = max(
                float(jnp.finfo(jnp.dtype(d)).smallest_normal)
                for d in (mine.dtype, other.dtype)
            )
            finite = np.isfinite(mine) & np.isfinite(other)
            np.testing.assert_allclose(
                np.asarray(mine[finite], np.complex128),
                np.asarray(other[finite], np.complex128),
                rtol=rtol,
                atol=max(
                    rtol * float(np.max(np.abs(other[finite]), initial=0.0)), tiny
                ),
                err_msg=what,
            )
    return bitwise


def _complex_hyperparameters(case: Case, leaf: Any) -> bool:
    """inject_hyperparams without hyperparam_dtype, complex params."""
    return case.wrapper == "inject" and np.iscomplexobj(leaf)


def _check_direction(
    case: Case,
    theirs_update: np.ndarray,
    ours_update: np.ndarray,
    before: Any,
    after: Any,
    theirs_mu: np.ndarray,
    theirs_nu: np.ndarray,
    leaf: str,
    deviations: set[str],
    b1: float,
    precision: float | None = None,
) -> None:
    complex_param = "complex" in case.param_dtype
    wide = np.complex128 if complex_param else np.float64
    # For real params Optax's a_n may be complex (stable-dtypes) with 0j.
    direction = np.asarray(theirs_update if complex_param else np.real(theirs_update))
    direction = direction.astype(wide)
    # Where Optax's m is 0 and its a_n NaN: 0 / 0 (zero-over-zero), or 0 over
    # a complex-typed denominator whose squared modulus underflows
    # (complex-division). Either way the quotient is 0.
    zero_over_zero = np.isnan(direction) & (np.asarray(theirs_mu) == 0)
    if np.any(zero_over_zero):
        deviations.add(
            "complex-division"
            if complex_param and np.all(np.asarray(theirs_nu)[zero_over_zero] != 0)
            else "zero-over-zero"
        )
        direction = np.where(zero_over_zero, 0.0, direction)
    prev_update = np.asarray(before.prev_update[leaf])
    new_update = np.asarray(after.prev_update[leaf])
    expected = _expected_direction(
        direction,
        prev_update,
        _unpack_signs(np.asarray(after.prev_grad_sign[leaf]), complex_param),
        _unpack_signs(np.asarray(before.prev_grad_sign[leaf]), complex_param),
        b1,
        case.variant,
    )
    rtol = max(8 * _dtype_eps(new_update.dtype), precision or 0.0)
    for part, (actual, wanted, a, u) in enumerate(
        zip(
            _parts(new_update),
            expected,
            _parts(direction),
            _parts(prev_update.astype(wide)),
            strict=True,
        )
    ):
        what = f"u_n[{leaf!r}] part {part}"
        # Rounded to our dtype (kept stable, where Optax's may widen), which
        # can overflow to inf.
        with np.errstate(over="ignore"):
            wanted = wanted.astype(actual.dtype).astype(np.float64)
        actual = np.asarray(actual, np.float64)
        known = np.isfinite(a)  # where Optax's a_n is finite
        for pattern in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(
                pattern(actual[known]), pattern(wanted[known]), err_msg=what
            )
        close = known & np.isfinite(wanted)
        scale = np.abs(a) + np.abs(np.where(np.isfinite(u), u, 0.0))
        np.testing.assert_array_less(
            np.abs(actual - wanted)[close],
            (rtol * scale + 1e-300)[close] * 1.0001,
            err_msg=what,
        )
    # The update handed on is u_n (prev_update has the params' dtype here).
    np.testing.assert_array_equal(
        ours_update.astype(wide), new_update.astype(wide), err_msg=f"update[{leaf}]"
    )


def _injected(state: Any, name: str, default: float) -> float:
    """The value a hyperparameter had as used: injected ones are rounded."""
    hyperparams = getattr(state, "hyperparams", {})
    return float(np.real(hyperparams[name])) if name in hyperparams else default


def _lowest_precision(ours: Any, theirs: Any) -> float:
    """The largest relative rounding among both sides' first moments, a few
    steps' worth: ours is rounded to its dtype every step, Optax's not."""
    return 4 * max(_dtype_eps(x.dtype) for x in jax.tree.leaves((ours.mu, theirs.mu)))


def _run_case(case: Case, raw_grads: list[dict[str, np.ndarray]]) -> set[str]:
    """Runs ours and Optax's; checks every step; returns the deviations seen."""
    ours_factory, theirs_factory, ours_cls, theirs_cls = FAMILIES[case.family]
    dtype = jnp.dtype(case.param_dtype)
    complex_param = jnp.issubdtype(dtype, jnp.complexfloating)
    params = {k: jnp.zeros(shape, dtype) for k, shape in SHAPES.items()}
    grads = [
        {
            k: jnp.asarray(v if complex_param else v.real).astype(dtype)
            for k, v in g.items()
        }
        for g in raw_grads
    ]
    ours_tx = _wrap(
        functools.partial(ours_factory, variant=case.variant), case.kwargs, case.wrapper
    )
    theirs_tx = _wrap(theirs_factory, case.kwargs, case.wrapper)
    deviations: set[str] = set()
    if case.wrapper == "inject" and dtype.itemsize == 2:
        # The hyperparameters are cast to the params' 16-bit dtype, where
        # b2 = 0.999 rounds to 1 (out-of-range, with a hint to pass
        # hyperparam_dtype); Optax trains with a frozen second moment.
        try:
            ours_tx.init(params)
        except ValueError as error:
            assert "hyperparam_dtype" in str(error)
            return {"out-of-range"}
    ours_states, ours_updates = _run(ours_tx, params, grads)
    try:
        theirs_states, theirs_updates = _run(theirs_tx, params, grads)
    except TypeError as error:
        # Optax's updates changed dtype inside a lax.cond (apply_if_finite,
        # cond): Optax cannot run this combination; ours did (stable-dtypes).
        assert "cond branches must have equal output types" in str(error)
        return {"stable-dtypes"}
    except ValueError as error:
        # Optax casts a complex moment to a real dtype, which JAX deprecates
        # (a warning now, an error later): ours keeps it complex.
        assert _COMPLEX_CAST in str(error)
        return {"complex-mu-dtype"}
    initial = _inner(ours_states[0], ours_cls)
    leaves = ["w"] if case.wrapper == "masked" else list(SHAPES)
    for n, grad in enumerate(grads):
        before = _inner(ours_states[n], ours_cls)
        after = _inner(ours_states[n + 1], ours_cls)
        theirs = _inner(theirs_states[n + 1], theirs_cls)
        bitwise = _check_moments(after, theirs, case, deviations, initial)
        _check_stable(ours_states[0], ours_states[n + 1], ours_updates[n], grad)
        if int(after.count) == int(before.count):
            continue  # the wrapper skipped the inner step: nothing to compare
        if "complex-mu-dtype" in deviations:
            continue  # Optax's a_n lost the imaginary part of its first moment
        for leaf in leaves:
            if case.wrapper in RAW_GRADIENT_WRAPPERS:
                _check_signs(after.prev_grad_sign[leaf], grad[leaf])
            theirs_update = np.asarray(theirs_updates[n][leaf])
            if theirs_update.dtype != np.asarray(ours_updates[n][leaf]).dtype:
                deviations.add("stable-dtypes")
            _check_direction(
                case,
                theirs_update,
                np.asarray(ours_updates[n][leaf]),
                before,
                after,
                np.asarray(theirs.mu[leaf]),
                np.asarray(theirs.nu[leaf]),
                leaf,
                deviations,
                _injected(ours_states[n + 1], "b1", case.kwargs["b1"]),
                # Optax's moments were rounded to another dtype than ours.
                precision=None if bitwise else _lowest_precision(after, theirs),
            )
    return deviations


def _check_signs(packed: Any, grad: Any) -> None:
    grad = np.asarray(grad)
    expected = np.sign(grad.real)
    if np.iscomplexobj(grad):
        expected = expected + 3 * np.sign(grad.imag)
    valid = ~np.isnan(expected)
    np.testing.assert_array_equal(np.asarray(packed)[valid], expected[valid])


def _check_stable(initial: Any, state: Any, updates: Any, grads: Any) -> None:
    """Dtypes, shapes and shardings as at init; updates in the gradients' dtypes."""
    for before, after in zip(
        jax.tree.leaves(initial), jax.tree.leaves(state), strict=True
    ):
        assert jnp.result_type(after) == jnp.result_type(before)
        assert jnp.shape(after) == jnp.shape(before)
        if isinstance(before, jax.Array) and isinstance(after, jax.Array):
            assert after.sharding.is_equivalent_to(before.sharding, after.ndim)
    for update, grad in zip(
        jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True
    ):
        assert update.dtype == grad.dtype
        assert update.shape == grad.shape


# Each example compiles two optimizers (about a second), so the number of
# examples is fixed here and shrinking is left out: a failure prints its
# example unshrunk rather than spending minutes on it.
@settings(max_examples=30, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(case=cases(), grads=gradient_sequences())
def test_matches_optax_step_by_step(case: Case, grads: list[Any]) -> None:
    with jax.enable_x64(case.param_dtype in ("float64", "complex128")):
        deviations = _run_case(case, grads)
    assert deviations <= set(DEVIATIONS), deviations


# --------------------------------------------------------------------------
# The aliases: the same arguments mean the same thing.

ALIASES = {
    "aadam": (ao.aadam, optax.adam, ao.ScaleByAAdamState, optax.ScaleByAdamState),
    "aadamw": (ao.aadamw, optax.adamw, ao.ScaleByAAdamState, optax.ScaleByAdamState),
    "aadamax": (
        ao.aadamax,
        optax.adamax,
        ao.ScaleByAAdaMaxState,
        optax.ScaleByAdamState,
    ),
    "aamsgrad": (
        ao.aamsgrad,
        optax.amsgrad,
        ao.ScaleByAAMSGradState,
        optax.ScaleByAmsgradState,
    ),
}
SCALE_BY = {
    "scale_by_aadam": (ao.scale_by_aadam, optax.scale_by_adam),
    "scale_by_aadamax": (ao.scale_by_aadamax, optax.scale_by_adamax),
    "scale_by_aamsgrad": (ao.scale_by_aamsgrad, optax.scale_by_amsgrad),
}
AADAM_ONLY = {"variant", "bias_correction", "prev_update_dtype", "mu_dtype"}


@pytest.mark.parametrize(
    "ours, theirs",
    [(a, b) for a, b, *_ in ALIASES.values()] + list(SCALE_BY.values()),
    ids=list(ALIASES) + list(SCALE_BY),
)
def test_signature_is_optax_s_then_aadam_s_keyword_only(
    ours: Callable[..., Any], theirs: Callable[..., Any]
) -> None:
    """Optax's parameters in Optax's order, with Optax's defaults and kinds;
    AAdam's own after them, keyword-only (the installed Optax is the judge)."""
    mine = list(inspect.signature(ours).parameters.values())
    other = list(inspect.signature(theirs).parameters.values())
    assert [(p.name, p.kind, p.default) for p in mine[: len(other)]] == [
        (p.name, p.kind, p.default) for p in other
    ]
    extra = mine[len(other) :]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)
    assert {p.name for p in extra} <= AADAM_ONLY
    # mu_dtype is AAdam's own only where Optax has none (adamax).
    assert ("mu_dtype" in {p.name for p in extra}) == (
        "mu_dtype" not in {p.name for p in other}
    )


WEIGHT_DECAY_SCHEDULE = optax.linear_schedule(1e-1, 0.0, 4)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("aadam", {"learning_rate": 0.5}),
        ("aadam", {"learning_rate": optax.linear_schedule(0.5, 0.125, 4)}),
        ("aadam", {"learning_rate": 0.25, "nesterov": True, "mu_dtype": jnp.bfloat16}),
        ("aadamw", {"learning_rate": 0.5, "weight_decay": 0.25}),
        ("aadamw", {"learning_rate": 0.5, "weight_decay": 0.25, "nesterov": True}),
        ("aadamw", {"learning_rate": 0.5, "weight_decay": WEIGHT_DECAY_SCHEDULE}),
        (
            "aadamw",
            {
                "learning_rate": 0.5,
                "weight_decay": 0.25,
                "mask": {"w": True, "b": False},
            },
        ),
        (
            "aadamw",
            {
                "learning_rate": 0.5,
                "weight_decay": 0.25,
                "mask": lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
            },
        ),
        ("aadamax", {"learning_rate": 0.5, "eps": 1e-3}),
        ("aamsgrad", {"learning_rate": 0.5, "bias_correction_mu": False}),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_alias_arguments_mean_what_optax_s_mean(name: str, kwargs: dict) -> None:
    """Moments bitwise Optax's, and `updates = -lr_n (u_n + wd_n theta)` where
    the decay applies, with the learning rate, decay and mask read as Optax
    reads them: subtracting Optax's decay term from Optax's update leaves
    `-lr_n a_n`, and ours leaves `-lr_n u_n`."""
    ours_alias, theirs_alias, ours_cls, theirs_cls = ALIASES[name]
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.0])}
    rng = np.random.default_rng(0)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(4)
    ]
    ours, theirs = ours_alias(**kwargs), theirs_alias(**kwargs)
    ours_states, ours_updates = _run(ours, params, grads)
    theirs_states, theirs_updates = _run(theirs, params, grads)
    learning_rate = kwargs["learning_rate"]
    decay = kwargs.get("weight_decay", 0.0)
    mask = kwargs.get("mask", jax.tree.map(lambda _: True, params))
    mask = mask(params) if callable(mask) else mask
    for n in range(len(grads)):
        mine = _inner(ours_states[n + 1], ours_cls)
        other = _inner(theirs_states[n + 1], theirs_cls)
        for field in ("mu", "nu", "nu_max"):
            if hasattr(other, field):
                jax.tree.map(
                    functools.partial(_assert_bitwise, what=field),
                    getattr(mine, field),
                    getattr(other, field),
                )
        lr = learning_rate(n) if callable(learning_rate) else learning_rate
        wd = decay(n) if callable(decay) else decay
        before = _inner(ours_states[n], ours_cls)
        for leaf, param in params.items():
            decayed = wd * mask[leaf] * np.asarray(param, np.float64)
            expected = -lr * (np.asarray(mine.prev_update[leaf]) + decayed)
            np.testing.assert_allclose(
                ours_updates[n][leaf], expected, rtol=1e-6, atol=1e-7
            )
            # Optax's update without its decay is -lr_n a_n: our u_n follows
            # from it by the rule (the gradients here are never 0).
            direction = -np.asarray(theirs_updates[n][leaf], np.float64) / lr - decayed
            (wanted,) = _expected_direction(
                direction,
                np.asarray(before.prev_update[leaf], np.float64),
                np.sign(np.asarray(grads[n][leaf], np.float64)),
                np.sign(np.asarray(grads[n - 1][leaf], np.float64)) * (n > 0),
                0.9,
                "sign_change",
            )
            np.testing.assert_allclose(
                mine.prev_update[leaf], wanted, rtol=1e-5, atol=1e-5
            )


# --------------------------------------------------------------------------
# The cautious optimizers: the unmasked optimizer's state, the reference mask.

# name -> (ours, the optimizer it masks, the state class they share)
CAUTIOUS: dict[str, tuple[Callable[..., Any], Callable[..., Any], type]] = {
    "cautious_adamw": (ao.cautious_adamw, optax.adamw, optax.ScaleByAdamState),
    "cautious_aadamw": (ao.cautious_aadamw, ao.aadamw, ao.ScaleByAAdamState),
}
# Wrappers that hand the inner transformation the gradient passed to update
# whenever it steps: the mask reads that gradient's signs. Under clipping and
# MultiSteps it reads a gradient the wrapper computed (a tiny component
# clipped or averaged may flush to 0 and lose its sign), so there only the
# state is compared.
CAUTIOUS_MASK_WRAPPERS = RAW_GRADIENT_WRAPPERS | {"apply_if_finite"}
CAUTIOUS_PARAMS = {
    "w": np.array([1.0, -2.0, 0.5, 3.0, -0.25]),
    "b": np.array([0.75, -1.5, 2.0]),
}


@dataclasses.dataclass(frozen=True)
class CautiousCase:
    name: str
    param_dtype: str
    wrapper: str
    options: tuple[tuple[str, Any], ...]  # shared with the unmasked optimizer
    cautious_eps: float

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


@st.composite
def cautious_cases(draw: st.DrawFn) -> CautiousCase:
    name = draw(st.sampled_from(sorted(CAUTIOUS)))
    param_dtype = draw(st.sampled_from(PARAM_DTYPES))
    complex_param = "complex" in param_dtype
    # Left out, each for a deviation the test above covers: injected complex
    # hyperparameters on complex params (Optax multiplies by them, ours takes
    # their real part: stable-dtypes); a real mu_dtype on complex params, or a
    # complex one on real params (complex-mu-dtype, stable-dtypes: Optax's
    # direction, which C-AdamW masks, changes dtype). And MultiSteps on complex
    # params: it casts their accumulated gradient to a real dtype, which JAX
    # deprecates (an error in a later JAX).
    wrappers = [
        w for w in WRAPPERS if not (complex_param and w in ("inject", "multi_steps"))
    ]
    mu_dtypes = [None, jnp.complex64] if complex_param else [None, jnp.bfloat16]
    options: dict[str, Any] = {
        "learning_rate": draw(st.sampled_from([0.5, 1e-3])),
        "b1": draw(st.sampled_from([0.5, 0.9, 0.99])),
        "b2": draw(st.sampled_from([0.0, 0.9, 0.999])),
        "eps": draw(st.sampled_from([0.0, 1e-8, 1e-3])),
        "eps_root": draw(st.sampled_from([0.0, 1e-8])),
        "mu_dtype": draw(st.sampled_from(mu_dtypes)),
        "weight_decay": draw(st.sampled_from([0.0, 0.25])),
        "nesterov": draw(st.booleans()),
    }
    if name == "cautious_aadamw":
        options["variant"] = draw(st.sampled_from(ao.VARIANTS))
    return CautiousCase(
        name=name,
        param_dtype=param_dtype,
        wrapper=draw(st.sampled_from(wrappers)),
        options=tuple(options.items()),
        # 1 is the default (the authors' first code), 0 and 1e-8 the paper's.
        cautious_eps=draw(st.sampled_from([0.0, 1e-8, 1.0])),
    )


def _expected_cautious_update(
    direction: np.ndarray,
    grad: np.ndarray,
    param: np.ndarray,
    learning_rate: float,
    weight_decay: float,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`-lr (mask(d) + wd theta)` in float64 (complex128), and the size of its
    terms, `|lr| (|mask(d)| + |wd theta|)`, which rounding errors scale with.

    The masked direction is rounded to the direction's dtype, as documented
    (the scale may overflow float16 there); the rest is unrounded.
    """
    wide = np.complex128 if np.iscomplexobj(param) else np.float64
    dtype = np.asarray(direction).dtype
    direction, grad, param = (
        np.asarray(x).astype(wide) for x in (direction, grad, param)
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        masked = cref.mask(direction, grad, eps).astype(dtype).astype(wide)
        decay = weight_decay * param
        size = abs(learning_rate) * (np.abs(masked) + np.abs(decay))
        return -learning_rate * (masked + decay), size


def _assert_cautious_update(
    actual: Any,
    expected: np.ndarray,
    size: np.ndarray,
    direction: np.ndarray,
    what: str,
) -> None:
    """The same non-finite pattern, and the finite parts equal to a few roundings
    of the update's or the direction's dtype, whichever is coarser (the scale
    is rounded, then the masked direction, the decay's sum and the learning
    rate's product), relative to the size of the terms: the decay may cancel
    the direction, and a complex quotient's small part carries the rounding
    of its modulus.

    Complex components whose direction has a non-finite part are left out:
    a complex product turns an infinite part into a NaN in the other one
    (`0 * inf`), in the learning rate's product as in the reference's
    `real + 1j * imag`, so neither side's other part means anything there.
    """
    actual = np.asarray(actual)
    direction_dtype = direction.dtype
    known = np.ones(direction.shape, bool)
    if np.iscomplexobj(direction):
        known = np.isfinite(direction.real) & np.isfinite(direction.imag)
    rtol = 8 * max(_dtype_eps(actual.dtype), _dtype_eps(direction_dtype))
    tiny = max(
        float(jnp.finfo(d).smallest_normal) for d in (actual.dtype, direction_dtype)
    )
    for a, e in zip(_parts(actual), _parts(expected), strict=True):
        with np.errstate(over="ignore"):
            e = e.astype(a.dtype).astype(np.float64)
        a = a.astype(np.float64)
        for pattern in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(
                pattern(a)[known], pattern(e)[known], err_msg=what
            )
        finite = known & np.isfinite(e)
        np.testing.assert_array_less(
            np.abs(a - e)[finite], (rtol * size + tiny)[finite], err_msg=what
        )


def _run_unless_cond_fails(
    tx: optax.GradientTransformation, params: Any, grads: list[Any]
) -> tuple[list[Any], list[Any]] | None:
    """`_run`, or None where a `lax.cond` refuses branches of two dtypes."""
    try:
        return _run(tx, params, grads)
    except TypeError as error:
        assert "cond branches must have equal output types" in str(error)
        return None


def _run_cautious_case(case: CautiousCase, raw_grads: list[Any]) -> None:
    ours_factory, theirs_factory, cls = CAUTIOUS[case.name]
    dtype = jnp.dtype(case.param_dtype)
    complex_param = jnp.issubdtype(dtype, jnp.complexfloating)
    shift = (1 - 0.5j) if complex_param else 1.0
    params = {
        k: jnp.asarray(v * shift).astype(dtype) for k, v in CAUTIOUS_PARAMS.items()
    }
    grads = [
        {
            k: jnp.asarray(v if complex_param else v.real).astype(dtype)
            for k, v in g.items()
        }
        for g in raw_grads
    ]
    kwargs = case.kwargs
    ours_tx = _wrap(
        ours_factory, {**kwargs, "cautious_eps": case.cautious_eps}, case.wrapper
    )
    theirs_tx = _wrap(theirs_factory, kwargs, case.wrapper)
    if case.wrapper == "inject" and dtype.itemsize == 2:
        # b2 = 0.999 in the params' 16-bit dtype may round to 1 (out-of-range).
        try:
            ours_tx.init(params)
        except ValueError as error:
            assert "hyperparam_dtype" in str(error)
            return
    runs = [_run_unless_cond_fails(tx, params, grads) for tx in (ours_tx, theirs_tx)]
    # Where Optax's update changes dtype inside a lax.cond (apply_if_finite,
    # cond), Optax cannot run (stable-dtypes), nor can C-AdamW, whose direction
    # is Optax's: a drop-in fails where the original does, and only there.
    assert (runs[0] is None) == (runs[1] is None), case
    if runs[0] is None or runs[1] is None:
        return
    (ours_states, ours_updates), (theirs_states, theirs_updates) = runs
    if case.name == "cautious_adamw":
        # Optax's own a_n, from its own transformation under the same wrapper.
        adam = {k: kwargs[k] for k in ("b1", "b2", "eps", "eps_root", "mu_dtype")}
        adam["nesterov"] = kwargs["nesterov"]
        _, directions = _run(
            _wrap(optax.scale_by_adam, adam, case.wrapper), params, grads
        )
    # The same state layout: a checkpoint of one restores into the other.
    if case.wrapper not in ("inject", "inject_float32"):  # + cautious_eps
        assert jax.tree.structure(ours_states[0]) == jax.tree.structure(
            theirs_states[0]
        )
    leaves = ["w"] if case.wrapper == "masked" else list(SHAPES)
    for n, grad in enumerate(grads):
        before = _inner(ours_states[n], cls)
        after = _inner(ours_states[n + 1], cls)
        theirs = _inner(theirs_states[n + 1], cls)
        # The mask touches no moment, nor AAdam's memory (which keeps u_n).
        # The memory is a longer computation than the moments, which XLA may
        # contract differently in two programs: to 2 units in the last place.
        for field in after._fields:
            for (path, mine), other in zip(
                jax.tree_util.tree_leaves_with_path(getattr(after, field)),
                jax.tree.leaves(getattr(theirs, field)),
                strict=True,
            ):
                what = f"{field}{jax.tree_util.keystr(path)}"
                exact = case.wrapper in CAUTIOUS_MASK_WRAPPERS
                exact = exact and field != "prev_update"
                if exact or not jnp.issubdtype(mine.dtype, jnp.inexact):
                    _assert_bitwise(mine, other, what)
                else:
                    with np.errstate(invalid="ignore"):  # inf - inf, not compared
                        _assert_within_ulps(mine, other, what)
        for leaf in SHAPES:
            # Where Optax's update changes dtype (stable-dtypes), ours does too:
            # C-AdamW is a drop-in for optax.adamw, C-AAdamW for aadamw.
            assert ours_updates[n][leaf].dtype == theirs_updates[n][leaf].dtype
            assert ours_updates[n][leaf].shape == grad[leaf].shape
        if case.wrapper == "masked":
            _assert_bitwise(ours_updates[n]["b"], grad["b"], "masked-out update")
        if case.wrapper not in CAUTIOUS_MASK_WRAPPERS:
            continue
        if int(after.count) == int(before.count):
            continue  # the wrapper skipped the inner step
        for leaf in leaves:
            if case.name == "cautious_adamw":
                direction = np.asarray(directions[n][leaf])
            else:
                direction = np.asarray(after.prev_update[leaf])
            expected, size = _expected_cautious_update(
                direction,
                np.asarray(grad[leaf]),
                np.asarray(params[leaf]),
                _injected(ours_states[n + 1], "learning_rate", kwargs["learning_rate"]),
                _injected(ours_states[n + 1], "weight_decay", kwargs["weight_decay"]),
                _injected(ours_states[n + 1], "cautious_eps", case.cautious_eps),
            )
            _assert_cautious_update(
                ours_updates[n][leaf],
                expected,
                size,
                direction,
                f"update[{leaf}]",
            )


# Each example compiles two or three optimizers: fewer examples than above.
@settings(max_examples=12, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(case=cautious_cases(), grads=gradient_sequences())
def test_cautious_is_the_unmasked_optimizer_then_the_reference_mask(
    case: CautiousCase, grads: list[Any]
) -> None:
    with jax.enable_x64(case.param_dtype in ("float64", "complex128")):
        _run_cautious_case(case, grads)


@pytest.mark.parametrize(
    "ours, theirs, own",
    [
        (ao.cautious_adamw, optax.adamw, {"cautious_eps"}),
        (ao.cautious_aadamw, optax.adamw, AADAM_ONLY | {"cautious_eps"}),
        (ao.cautious_aadamw, ao.aadamw, {"cautious_eps"}),
    ],
    ids=["cautious_adamw", "cautious_aadamw-optax", "cautious_aadamw-aadamw"],
)
def test_cautious_signature_is_the_unmasked_one_then_cautious_eps(
    ours: Callable[..., Any], theirs: Callable[..., Any], own: set[str]
) -> None:
    """The masked optimizer's parameters, in order with their defaults and
    kinds; its own after them, keyword-only, `cautious_eps` defaulting to 1
    (the authors' original code)."""
    mine = list(inspect.signature(ours).parameters.values())
    other = list(inspect.signature(theirs).parameters.values())
    assert [(p.name, p.kind, p.default) for p in mine[: len(other)]] == [
        (p.name, p.kind, p.default) for p in other
    ]
    extra = mine[len(other) :]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extra)
    assert {p.name for p in extra} <= own
    assert extra[-1].name == "cautious_eps" and extra[-1].default == 1.0


@pytest.mark.parametrize("name", ["cautious", "scale_by_cautious"])
def test_cautious_wrappers_take_eps_by_keyword_only(name: str) -> None:
    parameters = list(inspect.signature(getattr(ao, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in parameters[1:]] == [
        ("eps", inspect.Parameter.KEYWORD_ONLY, 1.0)
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": optax.linear_schedule(0.5, 0.125, 4), "weight_decay": 0.25},
        {"learning_rate": 0.5, "weight_decay": WEIGHT_DECAY_SCHEDULE},
        {"learning_rate": 0.5, "weight_decay": 0.25, "mask": {"w": True, "b": False}},
        {
            "learning_rate": 0.5,
            "weight_decay": 0.25,
            "mask": lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
            "nesterov": True,
        },
    ],
    ids=["lr-schedule", "wd-schedule", "decay-mask", "mask-fn-nesterov"],
)
def test_cautious_adamw_arguments_mean_what_optax_adamw_s_mean(kwargs: dict) -> None:
    """Moments bitwise optax.adamw's, and `updates = -lr_n (mask(a_n) + wd_n
    theta)` where the decay applies, with `a_n` optax.scale_by_adam's own: the
    learning rate, decay schedule and decay mask read as Optax reads them, the
    decay never masked by the cautious mask."""
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.0])}
    rng = np.random.default_rng(0)
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        for _ in range(4)
    ]
    ours_states, ours_updates = _run(ao.cautious_adamw(**kwargs), params, grads)
    theirs_states, _ = _run(optax.adamw(**kwargs), params, grads)
    adam = optax.scale_by_adam(nesterov=kwargs.get("nesterov", False))
    _, directions = _run(adam, params, grads)
    learning_rate, decay = kwargs["learning_rate"], kwargs["weight_decay"]
    mask = kwargs.get("mask", jax.tree.map(lambda _: True, params))
    mask = mask(params) if callable(mask) else mask
    kept = 0
    for n in range(len(grads)):
        mine = _inner(ours_states[n + 1], optax.ScaleByAdamState)
        other = _inner(theirs_states[n + 1], optax.ScaleByAdamState)
        jax.tree.map(functools.partial(_assert_bitwise, what="state"), mine, other)
        lr = learning_rate(n) if callable(learning_rate) else learning_rate
        wd = decay(n) if callable(decay) else decay
        for leaf, param in params.items():
            expected, _ = _expected_cautious_update(
                directions[n][leaf], grads[n][leaf], param, lr, wd * mask[leaf], 1.0
            )
            np.testing.assert_allclose(
                ours_updates[n][leaf], expected, rtol=1e-6, atol=1e-7
            )
            kept += int(
                np.sum(np.asarray(directions[n][leaf]) * np.asarray(grads[n][leaf]) > 0)
            )
    # The gradients flip sign: some steps are masked, some kept.
    assert 0 < kept < len(grads) * sum(np.size(p) for p in params.values())


# --------------------------------------------------------------------------
# The deviations table: each row checked on its own example, and no others.


def _rejects(factory: Callable[..., Any], **kwargs: Any) -> bool:
    try:
        factory(**kwargs)
    except (TypeError, ValueError):
        return True
    return False


def _optax_trains(factory: Callable[..., Any], **kwargs: Any) -> bool:
    """Optax accepts the value: it builds and steps without raising."""
    tx = factory(**kwargs)
    params = jnp.array([1.0, -2.0])
    state = tx.init(params)
    tx.update(jnp.array([0.5, -0.25]), state, params)
    return True


def _b1_zero() -> None:
    assert _optax_trains(optax.adam, learning_rate=0.1, b1=0.0)
    for factory in (ao.aadam, ao.aadamw, ao.aadamax, ao.aamsgrad):
        with pytest.raises(ValueError, match="^b1 must be in"):
            factory(learning_rate=0.1, b1=0.0)


def _out_of_range() -> None:
    bad = [
        ("b1", 1.0),
        ("b1", np.array(1.5)),
        ("b1", jnp.array(-0.1)),
        ("b2", 1.0),
        ("b2", jnp.array(-0.5)),
        ("eps", -1e-8),
        ("eps", np.inf),
        ("eps_root", jnp.array(-1.0)),
        ("learning_rate", -0.1),
        ("learning_rate", jnp.array(np.nan)),
    ]
    for name, value in bad:
        kwargs = {"learning_rate": 0.1, name: value}
        assert _optax_trains(optax.adam, **kwargs), name
        with pytest.raises(ValueError, match=f"^{name} must be"):
            ao.aadam(**kwargs)
    assert _optax_trains(optax.adamw, learning_rate=0.1, weight_decay=-1e-4)
    with pytest.raises(ValueError, match="^weight_decay must be"):
        ao.aadamw(learning_rate=0.1, weight_decay=-1e-4)
    # Values in range are accepted however they arrive; traced ones unchecked.
    for value in (0.5, np.float32(0.5), np.array(0.5), jnp.array(0.5)):
        ao.aadam(learning_rate=0.1, b1=value, b2=value)
    jax.jit(lambda b1: ao.aadam(0.1, b1=b1).init(jnp.zeros(2)))(jnp.array(2.0))


def _zero_over_zero() -> None:
    grads = [jnp.array([0.0, 1.0])] * 3
    for ours, theirs in (
        (ao.scale_by_aadam(eps=0.0), optax.scale_by_adam(eps=0.0)),
        (ao.scale_by_aadamax(eps=0.0), optax.scale_by_adamax(eps=0.0)),
        (ao.scale_by_aamsgrad(eps=0.0), optax.scale_by_amsgrad(eps=0.0)),
    ):
        (_, ours_updates), (_, theirs_updates) = (
            _run(tx, jnp.zeros(2), grads) for tx in (ours, theirs)
        )
        assert np.isnan(theirs_updates[-1][0]) and ours_updates[-1][0] == 0.0
        assert np.isfinite(ours_updates[-1][1])


# JAX's message when a complex array is cast to a real dtype, once the current
# deprecation warning becomes an error.
_COMPLEX_CAST = "Casting from complex to real"


def _complex_mu_dtype() -> None:
    params = jnp.zeros(2, jnp.complex64)
    grad = jnp.array([1 + 2j, -1j], jnp.complex64)
    tx = ao.scale_by_aadam(mu_dtype=jnp.float32)
    ours = tx.update(grad, tx.init(params))[1]
    assert ours.mu.dtype == jnp.complex64
    np.testing.assert_array_equal(np.imag(ours.mu), 0.1 * np.imag(grad))
    tx = optax.scale_by_adam(mu_dtype=jnp.float32)
    try:
        theirs = tx.update(grad, tx.init(params))[1]
    except ValueError as error:  # a later JAX refuses Optax's cast
        assert _COMPLEX_CAST in str(error)
        return
    assert theirs.mu.dtype == jnp.float32
    np.testing.assert_array_equal(np.real(ours.mu), theirs.mu)


def _stable_dtypes() -> None:
    params = {"r": jnp.zeros(2, jnp.bfloat16)}
    grad = {"r": jnp.array([1.0, -2.0], jnp.bfloat16)}
    for ours, theirs in (
        (ao.scale_by_aadam, optax.scale_by_adam),
        (ao.scale_by_aamsgrad, optax.scale_by_amsgrad),
    ):
        txs = [
            optax.inject_hyperparams(f, hyperparam_dtype=jnp.float32)()
            for f in (ours, theirs)
        ]
        (mine, mine_update), (other, other_update) = (
            (s.inner_state.mu["r"].dtype, u["r"].dtype)
            for u, s in (tx.update(grad, tx.init(params)) for tx in txs)
        )
        assert mine == mine_update == jnp.bfloat16
        assert other == other_update == jnp.float32
    mixed = {"r": jnp.zeros(2), "c": jnp.zeros(2, jnp.complex64)}
    grad = {"r": jnp.array([1.0, -2.0]), "c": jnp.array([1j, 2.0], jnp.complex64)}
    tx = optax.inject_hyperparams(ao.aadam)(learning_rate=0.1)
    updates, state = jax.jit(tx.update)(grad, tx.init(mixed), mixed)
    assert updates["r"].dtype == jnp.float32 and updates["c"].dtype == jnp.complex64
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    try:
        updates, _ = jax.jit(tx.update)(grad, tx.init(mixed), mixed)
    except ValueError as error:  # a later JAX refuses Optax's cast of nu
        assert _COMPLEX_CAST in str(error)
        return
    assert updates["r"].dtype == jnp.complex64


def _complex_division() -> None:
    # g = 1.5e-38 (1 + i): m = 0.1 g is subnormal and flushed to 0, v = |g| is
    # a normal 2.1e-38. Optax divides 0 by the complex-typed v, whose squared
    # modulus underflows: NaN. The quotient is 0.
    params = jnp.zeros(1, jnp.complex64)
    grad = jnp.array([1.5e-38 + 1.5e-38j], jnp.complex64)
    (ours_states, ours), (theirs_states, theirs) = (
        _run(tx, params, [grad])
        for tx in (ao.scale_by_aadamax(eps=0.0), optax.scale_by_adamax(eps=0.0))
    )
    _assert_bitwise(ours_states[1].nu, theirs_states[1].nu, "nu")
    assert np.real(theirs_states[1].nu[0]) > 0
    assert np.isnan(theirs[0][0])
    assert ours[0][0] == 0


def _flag_types() -> None:
    for value in ("False", None, 2):
        assert _optax_trains(optax.adam, learning_rate=0.1, nesterov=value)
        with pytest.raises(TypeError, match="^nesterov must be True or False"):
            ao.aadam(learning_rate=0.1, nesterov=value)
        with pytest.raises(TypeError, match="^bias_correction_mu must be"):
            ao.aamsgrad(learning_rate=0.1, bias_correction_mu=value)
    # What means a boolean means the same as in Optax: the first step is
    # b1 times Optax's (c_1 = 0), and nesterov changes Optax's first step.
    params, grad = jnp.array([1.0, -2.0]), jnp.array([0.5, -0.25])
    for value in (np.True_, 1, jnp.array(True), np.False_, 0):
        ours, theirs = (
            tx.update(grad, tx.init(params))[0]
            for tx in (
                ao.aadam(0.1, nesterov=value),
                optax.adam(0.1, nesterov=value),
            )
        )
        np.testing.assert_allclose(ours, 0.9 * np.asarray(theirs), rtol=1e-6)


DEVIATIONS: dict[str, Callable[[], None]] = {
    "b1-zero": _b1_zero,
    "out-of-range": _out_of_range,
    "zero-over-zero": _zero_over_zero,
    "complex-mu-dtype": _complex_mu_dtype,
    "stable-dtypes": _stable_dtypes,
    "complex-division": _complex_division,
    "flag-types": _flag_types,
}


def _table_ids() -> list[str]:
    page = (ROOT / "docs" / "deviations.md").read_text(encoding="utf-8")
    table = page.split("<!-- deviations-table -->")[1].split("<!--")[0]
    return re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE)


def test_the_deviations_table_lists_exactly_the_checked_deviations() -> None:
    assert sorted(_table_ids()) == sorted(DEVIATIONS)


@pytest.mark.parametrize("deviation", sorted(DEVIATIONS))
def test_each_deviation_is_as_the_table_says(deviation: str) -> None:
    DEVIATIONS[deviation]()
