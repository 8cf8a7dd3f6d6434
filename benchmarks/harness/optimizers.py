"""The optimizers under test and their workload-agnostic search space.

Every optimizer uses the same learning-rate schedule, a linear warm-up over
the first `WARMUP_FRACTION` of the budget then a cosine decay to zero
(`optax.warmup_cosine_decay_schedule`), with the peak learning rate as its
tuned hyperparameter. The Adam family shares one peak learning-rate range;
the decoupled-weight-decay ("W") variants also tune the decay.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import numpy as np
import optax
from scipy.stats import qmc

import aadam_optax

WARMUP_FRACTION = 0.05


def schedule(peak: jax.Array, steps: int) -> optax.Schedule:
    """Warm-up then cosine decay to zero, peaking at `peak` (may be traced)."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    # Optax's schedule branches in Python on its peak value, so it is built
    # for a peak of one and scaled: the peak stays a traced argument.
    unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, steps, end_value=0.0)
    return lambda count: peak * unit(count)


@dataclasses.dataclass(frozen=True)
class Space:
    """Log-uniform ranges `(low, high)` per hyperparameter, in a fixed order."""

    ranges: Mapping[str, tuple[float, float]]

    def points(self, unit: np.ndarray) -> list[dict[str, float]]:
        """Map points of the unit cube (one column per dimension) into the space.

        Dimension i of the space reads column i, so optimizers with fewer
        hyperparameters use a prefix of the same quasi-random points.
        """
        return [
            {
                name: float(math.exp(math.log(low) + u * math.log(high / low)))
                for (name, (low, high)), u in zip(
                    self.ranges.items(), row[: len(self.ranges)], strict=True
                )
            }
            for row in unit
        ]


# Three decades for each family. With a top of 3e-2 (SGD 3e-1) the winning
# trial was the highest rate sampled in 10 of 24 (workload, optimizer) cells, so
# the search could not see the rates where Adam starts to oscillate, the regime
# in which AAdam's brake can matter.
ADAM_LR = (1e-4, 1e-1)
SGD_LR = (1e-3, 1.0)
WEIGHT_DECAY = (1e-4, 1e-1)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An optimizer: its search space and `(hyperparameters, steps) -> optax`."""

    space: Space
    make: Callable[[Mapping[str, jax.Array], int], optax.GradientTransformation]


def _adam_family(
    build: Callable[..., optax.GradientTransformation], decoupled: bool
) -> Candidate:
    if decoupled:
        return Candidate(
            Space({"learning_rate": ADAM_LR, "weight_decay": WEIGHT_DECAY}),
            lambda h, steps: build(
                schedule(h["learning_rate"], steps), weight_decay=h["weight_decay"]
            ),
        )
    return Candidate(
        Space({"learning_rate": ADAM_LR}),
        lambda h, steps: build(schedule(h["learning_rate"], steps)),
    )


OPTIMIZERS: dict[str, Candidate] = {
    "aadam_sign_change": _adam_family(aadam_optax.aadam, decoupled=False),
    "aadamw": _adam_family(aadam_optax.aadamw, decoupled=True),
    "adam": _adam_family(optax.adam, decoupled=False),
    "adamw": _adam_family(optax.adamw, decoupled=True),
    "nadam": _adam_family(optax.nadam, decoupled=False),
    "sgd_momentum": Candidate(
        Space({"learning_rate": SGD_LR}),
        lambda h, steps: optax.sgd(schedule(h["learning_rate"], steps), momentum=0.9),
    ),
}


def quasi_random(count: int, dimensions: int = 2, seed: int = 0) -> np.ndarray:
    """`count` scrambled Sobol points in the unit cube, the same for everyone."""
    sampler = qmc.Sobol(dimensions, scramble=True, seed=seed)
    # Sobol points are balanced in runs of powers of two; draw the next power
    # and keep the first `count`.
    return sampler.random_base2(max(0, math.ceil(math.log2(count))))[:count]
