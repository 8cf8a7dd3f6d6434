"""A plain NumPy float64 reference of the update rules in docs/algorithms.md.

Written from the equations, not from the package: every test that compares the
package's arithmetic to something compares it to this module. All operations are
element-wise, so every function takes arrays of any shape (a leading batch axis,
for example one row per learning rate, is just more elements) and a pytree can
be checked by running the reference on each leaf, or on all leaves concatenated.

Conventions (docs/algorithms.md):

* step `n = 1, 2, ...`; `m_0 = v_0 = u_0 = 0` and `sign(g_0) := 0`;
* `sign(0) = 0`, so `c_n = 0` on the first step and wherever a gradient is 0,
  and a zero `c_n` contributes exactly 0 (even against an infinite `u_{n-1}`);
* `0 / 0 := 0` in the direction `a_n` (no step, rather than NaN);
* a learning-rate schedule is called with the number of steps already taken
  (0 on the first step), as optax calls it; `updates_n = -lr_n * u_n`, so with a
  schedule the previous direction is scaled by the *current* learning rate;
* with `nesterov=True` (Adam's direction only, as `optax.adam` offers it),
  `mhat_n` is NAdam's look-ahead
  `b1 * m_n / (1 - b1^(n+1)) + (1 - b1) * g_n / (1 - b1^n)`;
* complex params: `m` and `u` are complex, `v` (and AMSGrad's maximum) real,
  from `|g|^2` (AdaMax: from `|g|`); a complex moment is divided by the real
  denominator part by part (docs/deviations.md, `complex-division`), and the
  acceleration treats a complex number as the pair of reals it is made of,
  each part with its own sign history. The reference keeps that history as the
  complex number `sign(re) + 1j * sign(im)`; `packed_signs` writes it as the
  package stores it, `re + 3 * im`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

# The variants' names are the package's (its public `Variant` type); what each
# name means is written out again below, from the equations.
from aadam_optax import Variant

Family = Literal["adam", "adamax", "amsgrad"]
LearningRate = float | np.ndarray | Callable[[int], "float | np.ndarray"]


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of one accelerated Adam-family rule.

    Attributes:
      family: which direction `a_n`: ``"adam"``, ``"adamax"`` or ``"amsgrad"``.
      b1, b2, eps, eps_root: as in docs/algorithms.md (`eps_root` unused by AdaMax).
      variant: the acceleration coefficient `c_n`.
      bias_correction: divide Adam's moments by `1 - b**n` (AdaMax's `v` is never
        corrected, its `m` always is; AMSGrad always corrects both).
      nesterov: NAdam's look-ahead for `mhat_n` (``"adam"`` only). Without bias
        correction both divisors go: `b1 * m_n + (1 - b1) * g_n`.
    """

    family: Family = "adam"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    variant: Variant = "sign_change"
    bias_correction: bool = True
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.nesterov and self.family != "adam":
            raise ValueError("nesterov is NAdam's look-ahead of Adam's direction")


@dataclasses.dataclass
class State:
    """The reference state after step `count`.

    All arrays are float64, or for complex params complex128 (`mu`,
    `prev_update`, and `prev_grad_sign` as `sign(re) + 1j * sign(im)`) and
    float64 (`nu`, `nu_max`).
    """

    count: int
    mu: np.ndarray
    nu: np.ndarray
    nu_max: np.ndarray
    prev_update: np.ndarray
    prev_grad_sign: np.ndarray


@dataclasses.dataclass
class History:
    """What a run of the rule produced, one row per step.

    Attributes:
      directions: `a_n`, the un-accelerated direction.
      accelerated: `u_n`, the accelerated direction (before the learning rate).
      state: the state after the last step.
    """

    directions: np.ndarray
    accelerated: np.ndarray
    state: State


@dataclasses.dataclass
class Trajectory:
    """A whole optimisation run.

    Attributes:
      params: `theta_0 .. theta_{N-1}`, the params each step's gradient is taken
        at (row `n - 1` for step `n`).
      updates: the updates added to the params, `theta_{n+1} - theta_n`.
      final_params: `theta_N`.
      state: the state after the last step.
    """

    params: np.ndarray
    updates: np.ndarray
    final_params: np.ndarray
    state: State


def as_array(x: np.ndarray | float | complex) -> np.ndarray:
    """`x` in float64, or in complex128 if it is complex."""
    return np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)


def signs(grad: np.ndarray) -> np.ndarray:
    """`sign(g)`, with `sign(0) = 0`; for a complex `g`, each part's sign.

    (NumPy's own `sign` of a complex number is `z / |z|`, not the pair.)
    """
    if np.iscomplexobj(grad):
        return np.sign(grad.real) + 1j * np.sign(grad.imag)
    return np.sign(grad)


def packed_signs(grad_sign: np.ndarray) -> np.ndarray:
    """The signs as the package stores them: `re + 3 * im` for a complex pair."""
    if np.iscomplexobj(grad_sign):
        return grad_sign.real + 3 * grad_sign.imag
    return grad_sign


def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """`numerator / denominator` with `0 / 0 := 0`; `x / 0` stays inf for `x != 0`.

    The denominator is real; a complex numerator is divided part by part.
    """
    if np.iscomplexobj(numerator):
        return divide(numerator.real, denominator) + 1j * divide(
            numerator.imag, denominator
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = numerator / denominator
    return np.where(numerator == 0, 0.0, quotient)


def accelerate_step(
    direction: np.ndarray,
    grad_sign: np.ndarray,
    prev_grad_sign: np.ndarray,
    prev_update: np.ndarray,
    b1: float,
    variant: Variant,
) -> np.ndarray:
    """`u_n = b1 * a_n + (1 - b1) * c_n * u_{n-1}` with the variant's `c_n`.

    Complex arrays (signs as `sign(re) + 1j * sign(im)`) are two real problems:
    the real parts, and the imaginary parts.
    """
    if any(np.iscomplexobj(x) for x in (direction, grad_sign, prev_update)):
        parts = [
            accelerate_step(
                part(direction),
                part(grad_sign),
                part(prev_grad_sign),
                part(prev_update),
                b1,
                variant,
            )
            for part in (np.real, np.imag)
        ]
        return parts[0] + 1j * parts[1]
    if variant == "sign_change":
        coefficient, memory = grad_sign * prev_grad_sign, prev_update
    elif variant == "sign":
        coefficient, memory = grad_sign, prev_update
    elif variant == "magnitude":
        coefficient = grad_sign * prev_grad_sign * np.sign(direction)
        memory = np.abs(prev_update)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    with np.errstate(invalid="ignore"):
        term = np.where(coefficient == 0, 0.0, coefficient * memory)
    return b1 * direction + (1.0 - b1) * term


def accelerate_sequence(
    directions: np.ndarray, grads: np.ndarray, b1: float, variant: Variant
) -> np.ndarray:
    """The generic `accelerate`: `u_1 .. u_N` for given `a_n` and `g_n` (axis 0)."""
    directions, grads = as_array(directions), as_array(grads)
    prev_update = np.zeros(directions.shape[1:], directions.dtype)
    prev_grad_sign = np.zeros(directions.shape[1:])
    accelerated = np.empty_like(directions)
    for n in range(directions.shape[0]):
        grad_sign = signs(grads[n])
        prev_update = accelerate_step(
            directions[n], grad_sign, prev_grad_sign, prev_update, b1, variant
        )
        prev_grad_sign = grad_sign
        accelerated[n] = prev_update
    return accelerated


def init(shape: tuple[int, ...], dtype: npt.DTypeLike = np.float64) -> State:
    """The state before the first step: everything zero.

    `dtype` is the params' (float64 or complex128): `mu`, `prev_update` and the
    signs take it; `nu` and `nu_max` are real.
    """
    zeros, real_zeros = np.zeros(shape, dtype), np.zeros(shape)
    return State(0, zeros, real_zeros, real_zeros, zeros, zeros)


def step(
    state: State, grad: np.ndarray, config: Config
) -> tuple[np.ndarray, np.ndarray, State]:
    """One step of the rule: returns `(a_n, u_n, new state)`."""
    grad = as_array(grad)
    b1, b2 = config.b1, config.b2
    n = state.count + 1
    mu = b1 * state.mu + (1.0 - b1) * grad
    nu_max = state.nu_max
    if config.family == "adamax":
        # Adam paper section 7: infinity norm, no bias correction of v; eps
        # inside the maximum, as optax.adamax puts it.
        nu = np.maximum(b2 * state.nu, np.abs(grad) + config.eps)
        direction = divide(mu / (1.0 - b1**n), nu)
    else:
        nu = b2 * state.nu + (1.0 - b2) * np.abs(grad) ** 2
        if config.family == "amsgrad":
            nu_max = np.maximum(state.nu_max, nu / (1.0 - b2**n))
            mu_hat, second = mu / (1.0 - b1**n), nu_max
        else:
            mu_hat = _first_moment(mu, grad, n, config)
            second = nu / (1.0 - b2**n) if config.bias_correction else nu
        direction = divide(mu_hat, np.sqrt(second + config.eps_root) + config.eps)
    grad_sign = signs(grad)
    update = accelerate_step(
        direction,
        grad_sign,
        state.prev_grad_sign,
        state.prev_update,
        b1,
        config.variant,
    )
    return direction, update, State(n, mu, nu, nu_max, update, grad_sign)


def _first_moment(
    mu: np.ndarray, grad: np.ndarray, n: int, config: Config
) -> np.ndarray:
    """Adam's `mhat_n`, or with `nesterov` NAdam's look-ahead (Dozat 2016)."""
    b1 = config.b1
    if not config.nesterov:
        return mu / (1.0 - b1**n) if config.bias_correction else mu
    if not config.bias_correction:
        return b1 * mu + (1.0 - b1) * grad
    return b1 * mu / (1.0 - b1 ** (n + 1)) + (1.0 - b1) * grad / (1.0 - b1**n)


def run_directions(grads: np.ndarray, config: Config) -> History:
    """Runs the rule on a given gradient sequence (axis 0 is the step)."""
    grads = as_array(grads)
    state = init(grads.shape[1:], grads.dtype)
    directions = np.empty_like(grads)
    accelerated = np.empty_like(grads)
    for n in range(grads.shape[0]):
        directions[n], accelerated[n], state = step(state, grads[n], config)
    return History(directions, accelerated, state)


def _learning_rate(learning_rate: LearningRate, steps_taken: int) -> np.ndarray:
    if callable(learning_rate):
        return np.asarray(learning_rate(steps_taken), np.float64)
    return np.asarray(learning_rate, np.float64)


def run_trajectory(
    grad_fn: Callable[[np.ndarray], np.ndarray],
    params: np.ndarray,
    steps: int,
    learning_rate: LearningRate,
    config: Config,
    weight_decay: float = 0.0,
    decay_mask: bool | np.ndarray = True,
) -> Trajectory:
    """Optimises from `params` for `steps` steps.

    `updates_n = -lr_n * (u_n + weight_decay * mask * theta_n)`: the decoupled
    decay (AAdamW) sits outside `u_n`, so it is never accelerated.
    """
    theta = as_array(params)
    state = init(theta.shape, theta.dtype)
    history, updates = [], []
    decay = weight_decay * np.asarray(decay_mask, np.float64)
    for n in range(steps):
        _, direction, state = step(state, grad_fn(theta), config)
        update = -_learning_rate(learning_rate, n) * (direction + decay * theta)
        history.append(theta)
        updates.append(update)
        theta = theta + update
    return Trajectory(np.stack(history), np.stack(updates), theta, state)


def run_literal_trajectory(
    grad_fn: Callable[[np.ndarray], np.ndarray],
    params: np.ndarray,
    steps: int,
    learning_rate: LearningRate,
    b1: float,
    b2: float,
    eps: float,
    variant: Variant = "sign_change",
) -> Trajectory:
    """The AAdam text, literally: the memory is the previous *step*, lr included.

    `theta_{n+1} = theta_n - Delta_n`, `Delta_n = lr_n * b1 * mhat / sqrt(vhat +
    eps) + d_n`, `d_n = (1 - b1) * c_n * Delta_{n-1}` (for ``"magnitude"``,
    `(1 - b1) * s_n * |Delta_{n-1}| * sign(mhat)`). With a constant learning rate
    this is the package with `eps=0, eps_root=eps`; with a schedule it is not,
    since `Delta_{n-1}` carries the learning rate of its own step.
    """
    theta = np.asarray(params, np.float64)
    mu = np.zeros_like(theta)
    nu = np.zeros_like(theta)
    prev_step = np.zeros_like(theta)
    prev_grad_sign = np.zeros_like(theta)
    history, updates = [], []
    for n in range(1, steps + 1):
        grad = grad_fn(theta)
        mu = b1 * mu + (1.0 - b1) * grad
        nu = b2 * nu + (1.0 - b2) * grad**2
        adam_step = _learning_rate(learning_rate, n - 1) * divide(
            mu / (1.0 - b1**n), np.sqrt(nu / (1.0 - b2**n) + eps)
        )
        grad_sign = np.sign(grad)
        prev_step = _literal_step(
            adam_step, grad_sign, prev_grad_sign, prev_step, b1, variant
        )
        prev_grad_sign = grad_sign
        history.append(theta)
        updates.append(-prev_step)
        theta = theta - prev_step
    state = State(steps, mu, nu, np.zeros_like(theta), prev_step, prev_grad_sign)
    return Trajectory(np.stack(history), np.stack(updates), theta, state)


def _literal_step(
    adam_step: np.ndarray,
    grad_sign: np.ndarray,
    prev_grad_sign: np.ndarray,
    prev_step: np.ndarray,
    b1: float,
    variant: Variant,
) -> np.ndarray:
    """`Delta_n = b1 * (lr * mhat / sqrt(vhat + eps)) + d_n`, written out."""
    if variant == "sign_change":
        d = (1.0 - b1) * grad_sign * prev_grad_sign * prev_step
    elif variant == "sign":
        d = (1.0 - b1) * grad_sign * prev_step
    elif variant == "magnitude":
        d = (
            (1.0 - b1)
            * grad_sign
            * prev_grad_sign
            * np.abs(prev_step)
            * np.sign(adam_step)
        )
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return b1 * adam_step + d
