"""Interleaved timing of compiled steps.

Every contender runs once per round, in a rotating order, so that a noisy
machine slows all of them alike; a ratio is taken within each round, and its
median and interquartile range are what a report gives.

A sample runs k steps (the same k for every contender), so it times the step,
not Python's call overhead: inside one compiled loop, or as back-to-back calls
of a compiled function that runs `unroll` steps written out (XLA:CPU runs
convolutions many times slower inside a loop body, jax-ml/jax#12868).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

# A step is `step(carry, i, constants) -> carry`: `i` is the step's index in
# the sample (so that no work is the same in two steps and nothing can be
# hoisted out of the loop), `constants` the arrays every step reads.
Step = Callable[[Any, jax.Array, Any], Any]
Sample = Callable[[Any, Any, int], Any]


def compile_sample(
    step: Step, carry: Any, constants: Any, in_loop: bool, unroll: int = 1
) -> Sample:
    """`sample(carry, constants, k) -> carry`: k steps, the carry donated.

    In a loop, one call runs all k; otherwise each call runs `unroll` steps
    written out one after another (k must then be a multiple of `unroll`).
    """
    if in_loop:
        return _looped(step, carry, constants)

    def steps(carry: Any, first: jax.Array, constants: Any) -> Any:
        for offset in range(unroll):
            carry = step(carry, first + offset, constants)
        return carry

    call = jax.jit(steps, donate_argnums=0)
    call = call.lower(carry, np.int32(0), constants).compile()

    def k_calls(carry: Any, constants: Any, k: int) -> Any:
        for first in range(0, k, unroll):
            carry = call(carry, np.int32(first), constants)
        return carry

    return k_calls


def _looped(step: Step, carry: Any, constants: Any) -> Sample:
    def k_steps(carry: Any, constants: Any, k: jax.Array) -> Any:
        return jax.lax.fori_loop(
            0, k, lambda i, carry: step(carry, i, constants), carry
        )

    looped = jax.jit(k_steps, donate_argnums=0)
    looped = looped.lower(carry, constants, np.int32(1)).compile()
    return lambda carry, constants, k: looped(carry, constants, np.int32(k))


@dataclasses.dataclass
class Contender:
    """One thing timed in a round: its compiled sample, carry and times."""

    sample: Sample
    carry: Any
    constants: Any
    seconds: list[float] = dataclasses.field(default_factory=list)

    def run(self, k: int) -> float:
        start = time.perf_counter()
        self.carry = self.sample(self.carry, self.constants, k)
        jax.block_until_ready(self.carry)
        return time.perf_counter() - start


def steps_per_sample(
    contender: Contender, sample_seconds: float, multiple: int = 1
) -> int:
    """Enough steps, a multiple of `multiple`, that one sample takes about
    `sample_seconds`.

    Estimated twice: a single step's time includes the call's fixed cost, so
    the first estimate of k is refined by timing k steps.
    """
    k = multiple
    contender.run(k)  # the first run of an executable pays one-off costs
    for _ in range(2):
        seconds_per_step = contender.run(k) / k
        k = int(min(10_000, max(1, sample_seconds / max(seconds_per_step, 1e-7))))
        k = multiple * -(-k // multiple)
    return k


def time_interleaved(
    contenders: dict[Any, Contender],
    rounds: int,
    sample_seconds: float,
    multiple: int = 1,
) -> int:
    """Fills each contender's `seconds` (per step) with `rounds` samples of k
    steps, k chosen by the first contender; returns k."""
    k = steps_per_sample(next(iter(contenders.values())), sample_seconds, multiple)
    for contender in contenders.values():
        contender.run(k)  # warm up at the timed k
    names = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            contenders[name].seconds.append(contenders[name].run(k) / k)
    return k


class Quartiles(NamedTuple):
    median: float
    q25: float
    q75: float


def quartiles(values: Sequence[float] | np.ndarray) -> Quartiles:
    q25, median, q75 = np.percentile(np.asarray(values), [25, 50, 75])
    return Quartiles(float(median), float(q25), float(q75))


def per_round(
    seconds: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray
) -> tuple[Quartiles, Quartiles]:
    """Quartiles of the times in milliseconds, and of each round's ratio to
    the reference's time in the same round."""
    times = np.asarray(seconds)
    return quartiles(1e3 * times), quartiles(times / np.asarray(reference))
