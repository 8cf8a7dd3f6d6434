"""Bad input fails early, at the line that made it, with a message that helps.

Constructor arguments are checked when they are concrete (Python numbers,
NumPy and JAX arrays that hold values, strings, dtypes); traced values and
schedules pass through so that `optax.inject_hyperparams` works. `update`
checks that the gradient tree matches the state, and `init` that every param
can be trained.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aadam_optax as ao

FACTORIES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "scale_by_aadam": ao.scale_by_aadam,
    "aadam": ao.aadam,
    "aadamw": ao.aadamw,
    "scale_by_aadamax": ao.scale_by_aadamax,
    "aadamax": ao.aadamax,
    "scale_by_aamsgrad": ao.scale_by_aamsgrad,
    "aamsgrad": ao.aamsgrad,
    "accelerate": ao.accelerate,
    "cautious": ao.cautious,
    "scale_by_cautious": ao.scale_by_cautious,
    "cautious_adamw": ao.cautious_adamw,
    "cautious_aadamw": ao.cautious_aadamw,
}
# Whose `b1` is Adam's own decay rate, in [0, 1) as in optax.adamw, rather than
# AAdam's acceleration weight, in (0, 1).
ADAM_B1 = {"cautious_adamw"}

# Arguments every call needs; the tests override one argument at a time.
REQUIRED: dict[str, Any] = {
    "learning_rate": 0.1,
    "inner": optax.scale_by_adam(),
    "optimizer": optax.adam(0.1),
}

NAN, INF = float("nan"), float("inf")

# (bad value, exception, what the message must say besides the name)
DECAY_RATE = "must be in \\[0, 1\\)"
NON_NEGATIVE = "must be a finite number >= 0"
NUMBER = "must be a number"
DTYPE = "must be None or a floating-point"
ACCELERATION_WEIGHT = "must be in \\(0, 1\\)"
BAD_VALUES: dict[str, list[tuple[Any, type[Exception], str]]] = {
    "b1": [
        (0.0, ValueError, ACCELERATION_WEIGHT),
        (0, ValueError, ACCELERATION_WEIGHT),
        (np.float32(0.0), ValueError, ACCELERATION_WEIGHT),
        (1.0, ValueError, ACCELERATION_WEIGHT),
        (-0.1, ValueError, ACCELERATION_WEIGHT),
        (NAN, ValueError, ACCELERATION_WEIGHT),
        (INF, ValueError, ACCELERATION_WEIGHT),
        ("0.9", TypeError, NUMBER),
        (None, TypeError, NUMBER),
        (True, TypeError, NUMBER),
        (0.9j, TypeError, NUMBER),
        # Concrete arrays are checked like numbers: b1 = jnp.array(0.0) used to
        # train with params that never moved.
        (jnp.array(0.0), ValueError, ACCELERATION_WEIGHT),
        (np.array(1.5), ValueError, ACCELERATION_WEIGHT),
        (jnp.array([0.9, 1.0]), ValueError, ACCELERATION_WEIGHT),
        (jnp.array(0.9 + 0.1j), TypeError, NUMBER),
        (jnp.array(True), TypeError, NUMBER),
        (jnp.array(2), ValueError, ACCELERATION_WEIGHT + ".*: at b1 = 1"),
        (NAN, ValueError, ACCELERATION_WEIGHT + r", got nan\.$"),
    ],
    "b2": [
        (1.0, ValueError, DECAY_RATE),
        (-0.1, ValueError, DECAY_RATE),
        (1.5, ValueError, DECAY_RATE),
        (NAN, ValueError, DECAY_RATE),
        (INF, ValueError, DECAY_RATE),
        (-INF, ValueError, DECAY_RATE),
        (np.float32(1.0), ValueError, DECAY_RATE),
        ("0.9", TypeError, NUMBER),
        (None, TypeError, NUMBER),
        (True, TypeError, NUMBER),
        (0.9j, TypeError, NUMBER),
        (jnp.array(1.0), ValueError, DECAY_RATE),
        (np.array([0.5, -0.5]), ValueError, DECAY_RATE),
    ],
    "eps": [
        (-1e-8, ValueError, NON_NEGATIVE),
        (NAN, ValueError, NON_NEGATIVE),
        (INF, ValueError, NON_NEGATIVE),
        (np.float64(-1.0), ValueError, NON_NEGATIVE),
        (jnp.array(-1e-8), ValueError, NON_NEGATIVE),
        (np.array(np.inf), ValueError, NON_NEGATIVE),
        ("1e-8", TypeError, NUMBER),
        (None, TypeError, NUMBER),
        (True, TypeError, NUMBER),
        (np.False_, TypeError, NUMBER),
        (-INF, ValueError, NON_NEGATIVE),
    ],
    "learning_rate": [
        (-0.1, ValueError, NON_NEGATIVE),
        (NAN, ValueError, NON_NEGATIVE),
        (INF, ValueError, NON_NEGATIVE),
        (jnp.array(-0.1), ValueError, NON_NEGATIVE),
        ("0.1", TypeError, NUMBER),
        (None, TypeError, NUMBER),
    ],
    "variant": [
        ("nesterov", ValueError, "must be one of 'sign_change', 'sign', 'magnitude'"),
        ("SIGN", ValueError, "must be one of 'sign_change', 'sign', 'magnitude'"),
        ("", ValueError, "must be one of"),
        (1, ValueError, "must be one of"),
        (None, ValueError, "must be one of"),
    ],
    "bias_correction": [
        (1, TypeError, "must be True or False"),
        ("False", TypeError, "must be True or False"),
        (None, TypeError, "must be True or False"),
    ],
    # Optax's own switches take what Optax reads as a boolean, but not a
    # string or None (Optax would read "False" as true; docs/deviations.md).
    "nesterov": [
        ("True", TypeError, "must be True or False"),
        ("False", TypeError, "must be True or False"),
        (None, TypeError, "must be True or False"),
        (2, TypeError, "must be True or False"),
    ],
    "mu_dtype": [
        (jnp.int32, TypeError, DTYPE),
        (np.int8, TypeError, DTYPE),
        (jnp.bool_, TypeError, DTYPE),
        ("int32", TypeError, DTYPE),
        (jnp.uint8, TypeError, DTYPE),
        ("not_a_dtype", TypeError, DTYPE),
        (3, TypeError, DTYPE),
        (object, TypeError, DTYPE),
    ],
}
BAD_VALUES["eps_root"] = BAD_VALUES["eps"]
# The cautious mask's eps (added to the kept count): finite and >= 0 too.
BAD_VALUES["cautious_eps"] = BAD_VALUES["eps"]
BAD_VALUES["weight_decay"] = BAD_VALUES["learning_rate"]
BAD_VALUES["bias_correction_mu"] = BAD_VALUES["nesterov"]
BAD_VALUES["bias_correction_nu"] = BAD_VALUES["nesterov"]
BAD_VALUES["prev_update_dtype"] = [
    *BAD_VALUES["mu_dtype"],
    # mu_dtype may be complex, as in Optax; prev_update_dtype, AAdam's own, not.
    (jnp.complex64, TypeError, "must be None or a floating-point dtype"),
]

# Arguments that take objects rather than values; tested separately below.
NOT_VALUES = {"inner", "optimizer", "mask"}


def _bad_values(name: str, argument: str) -> list[tuple[Any, type[Exception], str]]:
    """The bad values of `argument` for the factory `name`."""
    if argument == "b1" and name in ADAM_B1:
        # Adam's b1 is a decay rate like b2 (b1 = 0 is RMSprop's direction).
        return BAD_VALUES["b2"]
    return BAD_VALUES[argument]


def _build(name: str, **overrides: Any) -> optax.GradientTransformation:
    factory = FACTORIES[name]
    parameters = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in REQUIRED.items() if k in parameters}
    kwargs.update(overrides)
    return factory(**kwargs)


def _cases() -> list[Any]:
    cases = []
    for name, factory in FACTORIES.items():
        for argument in inspect.signature(factory).parameters:
            if argument in NOT_VALUES:
                continue
            bad = _bad_values(name, argument)
            for index, (value, error, allowed) in enumerate(bad):
                cases.append(
                    pytest.param(
                        name,
                        argument,
                        value,
                        error,
                        allowed,
                        id=f"{name}-{argument}-{index}",
                    )
                )
    return cases


def test_every_constructor_argument_has_bad_values() -> None:
    """A new argument must come with its own bad values here."""
    for factory in FACTORIES.values():
        for argument in inspect.signature(factory).parameters:
            assert argument in BAD_VALUES or argument in NOT_VALUES, argument


@pytest.mark.parametrize(("name", "argument", "value", "error", "allowed"), _cases())
def test_bad_constructor_argument_names_itself_and_what_is_allowed(
    name: str, argument: str, value: Any, error: type[Exception], allowed: str
) -> None:
    # The message starts with the argument's name, so "eps" cannot be matched by
    # a message about "eps_root".
    with pytest.raises(error, match=f"^{argument} {allowed}"):
        _build(name, **{argument: value})


@pytest.mark.parametrize("inner", [None, optax.scale_by_adam, 0.1])
def test_accelerate_rejects_an_inner_that_is_not_a_transformation(inner: Any) -> None:
    with pytest.raises(TypeError, match="inner"):
        ao.accelerate(inner)


@pytest.mark.parametrize(
    ("name", "argument", "value"),
    [
        ("cautious", "optimizer", optax.adam),
        ("cautious", "optimizer", ao.aadamw),
        ("cautious", "optimizer", None),
        ("cautious", "optimizer", 0.1),
        ("scale_by_cautious", "inner", optax.scale_by_adam),
        ("scale_by_cautious", "inner", None),
    ],
    ids=lambda x: getattr(x, "__name__", repr(x)),
)
def test_cautious_rejects_what_is_not_a_transformation(
    name: str, argument: str, value: Any
) -> None:
    """`cautious(optax.adam)` (the factory, not `optax.adam(lr)`) names the
    argument, shows an example and says what to pass."""
    with pytest.raises(TypeError, match=f"^{argument} must be an optax") as info:
        FACTORIES[name](value)
    assert "Pass the transformation, not the function that builds it" in str(info.value)


@pytest.mark.parametrize("name", ["cautious", "scale_by_cautious"])
def test_cautious_eps_is_keyword_only(name: str) -> None:
    """`cautious(opt, 1e-8)` would be read as nothing else: it is refused."""
    with pytest.raises(TypeError):
        FACTORIES[name](REQUIRED["optimizer"], 1e-8)


# --------------------------------------------------------------------------
# Valid edge values construct and run.

# Test ids use repr(value), or "schedule" for a callable, so that they are the
# same in every process (pytest-xdist compares them).
EDGE_VALUES: list[tuple[str, Any]] = [
    ("b1", 1e-6),
    ("b2", 0.0),
    ("eps", 0.0),
    ("eps_root", 0.0),
    ("learning_rate", 0.0),
    ("learning_rate", optax.linear_schedule(0.1, 0.0, 10)),
    ("learning_rate", jnp.array(0.05)),
    ("b1", jnp.array(0.8)),
    ("b2", np.float32(0.99)),
    ("eps", jnp.array(1e-6)),
    ("weight_decay", 0.0),
    ("weight_decay", jnp.array(0.2)),
    ("weight_decay", optax.linear_schedule(1e-2, 0.0, 100)),
    ("b1", np.array(0.5)),
    ("b1", jnp.array(0.9 + 0j)),
    ("nesterov", True),
    ("nesterov", np.True_),
    ("nesterov", 1),
    ("bias_correction_mu", jnp.array(False)),
    ("bias_correction_nu", 0),
    ("bias_correction_mu", False),
    ("bias_correction_nu", False),
    ("mu_dtype", jnp.complex64),
    ("variant", "sign"),
    ("variant", "magnitude"),
    ("bias_correction", False),
    ("mu_dtype", jnp.bfloat16),
    ("mu_dtype", "float16"),
    ("prev_update_dtype", np.dtype("float32")),
    # 0 divides by the kept count alone (the paper's current version).
    ("cautious_eps", 0.0),
    ("cautious_eps", jnp.array(1e-8)),
    ("cautious_eps", np.float32(2.0)),
]


def _edge_cases() -> list[Any]:
    cases = []
    for name, factory in FACTORIES.items():
        parameters = inspect.signature(factory).parameters
        for argument, value in EDGE_VALUES:
            if argument in parameters:
                label = "schedule" if inspect.isfunction(value) else repr(value)
                cases.append(
                    pytest.param(name, argument, value, id=f"{name}-{argument}-{label}")
                )
    return cases


@pytest.mark.parametrize(("name", "argument", "value"), _edge_cases())
def test_valid_edge_values_construct_and_step(
    name: str, argument: str, value: Any
) -> None:
    opt = _build(name, **{argument: value})
    params = {"w": jnp.array([1.0, -2.0])}
    state = opt.init(params)
    updates, _ = opt.update({"w": jnp.array([0.5, -0.25])}, state, params)
    assert np.all(np.isfinite(updates["w"]))


# The factories whose b1 is AAdam's acceleration weight.
ACCELERATED = [
    name
    for name, factory in FACTORIES.items()
    if "b1" in inspect.signature(factory).parameters and name not in ADAM_B1
]


@pytest.mark.parametrize("name", ACCELERATED)
def test_zero_b1_is_rejected_saying_why(name: str) -> None:
    """`u_n = b1 a_n + (1 - b1) c_n u_{n-1}` from `u_0 = 0` is 0 for every n when
    b1 = 0: such an optimizer never moves (unlike Adam, where b1 = 0 is
    RMSprop), so it is an error rather than a silent no-op."""
    with pytest.raises(ValueError, match="^b1 must be in .*stays zero forever"):
        _build(name, b1=0.0)


@pytest.mark.parametrize("name", ACCELERATED)
def test_b1_of_one_is_rejected_for_its_own_reason(name: str) -> None:
    with pytest.raises(
        ValueError, match="^b1 must be in .*first moment.*never leaves 0"
    ):
        _build(name, b1=1.0)


@pytest.mark.parametrize("b1", [0.0, jnp.array(0.0)], ids=["float", "array"])
def test_cautious_adamw_takes_adam_s_b1_of_zero(b1: Any) -> None:
    """As in optax.adamw, b1 = 0 is allowed (Adam's direction is then
    `g / (|g| + eps)` from the first step on), and 1 is not."""
    opt = ao.cautious_adamw(0.1, b1=b1, weight_decay=0.0, cautious_eps=0.0)
    params = jnp.array([1.0, -2.0])
    grads = jnp.array([0.5, -0.25])
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update(grads, state, params)
    # Both components agree with their gradient: none masked, scale 2 / 2.
    # (float32 rounds 1 - 0.999 by 1.3e-5 relative.)
    np.testing.assert_allclose(updates, -0.1 * np.sign(grads), rtol=2e-5)
    with pytest.raises(ValueError, match=r"^b1 must be in \[0, 1\)"):
        ao.cautious_adamw(0.1, b1=1.0)


@pytest.mark.parametrize(
    "factory",
    [ao.aadam, ao.aadamw, ao.aadamax, ao.aamsgrad, ao.cautious_aadamw],
    ids=["aadam", "aadamw", "aadamax", "aamsgrad", "cautious_aadamw"],
)
def test_hyperparameters_injected_as_arrays_pass_validation_under_jit(
    factory: Callable,
) -> None:
    """Under `inject_hyperparams` the optimizer is rebuilt inside `jit` with
    traced hyperparameters; validation must let them through, and the traced
    value must be the one used. With b1 = 0 every accelerated direction is 0
    (`u_n = c_n u_{n-1}`, `u_0 = 0`), which tells the injected b1 was applied."""
    opt = optax.inject_hyperparams(factory)(learning_rate=0.1, b1=0.8, b2=0.99)
    params = jnp.array([1.0, -2.0])
    grads = jnp.array([0.5, -0.25])
    state = opt.init(params)
    update = jax.jit(opt.update)
    updates, _ = update(grads, state, params)
    assert np.all(np.asarray(updates) != 0)

    state.hyperparams["b1"] = jnp.array(0.0)
    if "weight_decay" in state.hyperparams:
        state.hyperparams["weight_decay"] = jnp.array(0.0)
    updates, _ = update(grads, state, params)
    np.testing.assert_array_equal(updates, 0.0)


# --------------------------------------------------------------------------
# update: the gradient tree must match the state.

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "aadam": lambda: ao.aadam(0.1),
    "aadamw": lambda: ao.aadamw(0.1),
    "aadamax": lambda: ao.aadamax(0.1),
    "aamsgrad": lambda: ao.aamsgrad(0.1),
    "accelerate": lambda: ao.accelerate(optax.scale_by_adam()),
    # The mask wraps AAdam, whose checks run first. cautious_adamw is not
    # here: its state is optax.adamw's, whose init and update check neither
    # the tree nor the shapes (tests/test_cautious.py covers its mask's own
    # refusal of an integer leaf).
    "cautious_aadamw": lambda: ao.cautious_aadamw(0.1),
    "cautious(aadam)": lambda: ao.cautious(ao.aadam(0.1)),
}


def _params() -> dict[str, Any]:
    return {"layer": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_mismatched_gradient_tree_names_both_structures(name: str, jit: bool) -> None:
    opt = OPTIMIZERS[name]()
    params = _params()
    state = opt.init(params)
    grads = {"layer": {"w": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
    update = jax.jit(opt.update) if jit else opt.update
    with pytest.raises(ValueError, match="gradient tree does not match") as info:
        update(grads, state, params)
    message = str(info.value)
    assert str(jax.tree.structure(grads)) in message
    assert str(jax.tree.structure(params)) in message
    # A short message, not a deep trace of JAX internals.
    assert len(message) < 1000


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_extra_or_missing_leaf_is_a_structure_error(name: str) -> None:
    opt = OPTIMIZERS[name]()
    params = [jnp.ones(2), jnp.ones(3)]
    state = opt.init(params)
    for grads in ([jnp.ones(2)], [jnp.ones(2), jnp.ones(3), jnp.ones(1)]):
        with pytest.raises(ValueError, match="does not match the optimizer state"):
            opt.update(grads, state, params)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("bad_shape", [(3, 2), (2, 1), (1, 3), ()])
def test_shape_mismatch_names_the_leaf_and_both_shapes(
    name: str, bad_shape: tuple[int, ...]
) -> None:
    """Shapes that would broadcast against the state are rejected too."""
    opt = OPTIMIZERS[name]()
    params = _params()
    state = opt.init(params)
    grads = {"layer": {"w": jnp.ones(bad_shape), "b": jnp.zeros(3)}}
    expected = (
        re.escape("['layer']['w']")
        + ".*"
        + re.escape(str(bad_shape))
        + ".*"
        + re.escape(str((2, 3)))
    )
    with pytest.raises(ValueError, match=expected):
        opt.update(grads, state, params)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_shape_mismatch_of_a_bare_array_param_says_so(name: str) -> None:
    opt = OPTIMIZERS[name]()
    state = opt.init(jnp.zeros(3))
    with pytest.raises(
        ValueError, match=r"^The gradient \(a single array\) has shape \(4,\)"
    ):
        opt.update(jnp.ones(4), state)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_failed_update_leaves_the_old_state_usable(name: str) -> None:
    opt = OPTIMIZERS[name]()
    params = _params()
    state = opt.init(params)
    good = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates, state = opt.update(good, state, params)
    snapshot = jax.tree.map(np.array, state)

    with pytest.raises(ValueError):
        opt.update({"layer": {"w": jnp.ones((2, 3))}}, state, params)
    with pytest.raises(ValueError):
        opt.update({"layer": {"w": jnp.ones(3), "b": jnp.ones(3)}}, state, params)

    # The state is unchanged and still steps exactly as a state that never saw
    # the failures.
    jax.tree.map(np.testing.assert_array_equal, state, snapshot)
    after_failures, _ = opt.update(good, state, params)
    clean, _ = opt.update(good, jax.tree.map(jnp.asarray, snapshot), params)
    jax.tree.map(np.testing.assert_array_equal, after_failures, clean)


# --------------------------------------------------------------------------
# init: every param must be trainable.


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(
    "bad", [jnp.arange(3), jnp.array([True, False]), np.int8(3)], ids=str
)
def test_integer_or_boolean_param_fails_at_init_naming_its_path(
    name: str, bad: Any
) -> None:
    opt = OPTIMIZERS[name]()
    params = {"layer": {"w": jnp.ones(3), "step": bad}}
    dtype = jnp.result_type(bad)
    with pytest.raises(TypeError, match=re.escape("['layer']['step']") + f".*{dtype}"):
        opt.init(params)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_integer_param_at_the_root_is_named_as_such(name: str) -> None:
    with pytest.raises(TypeError, match="the root.*int32.*optax.masked"):
        OPTIMIZERS[name]().init(jnp.arange(3, dtype=jnp.int32))


def test_a_rounding_hint_only_where_rounding_made_the_value_one() -> None:
    """inject_hyperparams casts hyperparameters to 16-bit params' dtype, where
    0.999 becomes 1: that message names hyperparam_dtype; other bad 16-bit
    values do not get the hint, and a negative b1 is not called zero."""
    with pytest.raises(ValueError, match="hyperparam_dtype=jnp.float32"):
        ao.aadam(0.1, b2=jnp.array(0.999, jnp.bfloat16))
    for kwargs in (
        {"b1": jnp.array(-0.5, jnp.float16)},
        {"b2": jnp.array(2.0, jnp.bfloat16)},
    ):
        with pytest.raises(ValueError) as info:
            ao.aadam(0.1, **kwargs)
        assert "hyperparam_dtype" not in str(info.value)
        assert "b1 = 0" not in str(info.value)
