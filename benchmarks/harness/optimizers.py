"""The optimizers under test, their learning-rate grids, and the relatives.

Every optimizer uses the same learning-rate schedule, a linear warm-up over
the first `WARMUP_FRACTION` of the budget then a cosine decay to zero
(`optax.warmup_cosine_decay_schedule`); its peak is the one tuned
hyperparameter, tried on a fixed log-spaced grid of `GRID_POINTS` rates over
`DECADES` decades. The Adam family (AAdam and Optax's Adam) and ADOPT share
one grid; Lion, whose sign update has unit size per coordinate, gets the grid
one decade lower, as its authors advise rates 3-10x below AdamW's. The
decoupled weight decay of the "W" optimizers (and Lion's) is fixed, not
tuned, and off on workloads that are their own objective
(`Workload.decoupled_decay`): a decay there would move the minimiser.

The relatives are comparators: Cautious AdamW (Liang et al. 2024; the
library's `cautious_adamw`, with the authors' original `+1` in the rescale),
`optax.lion` (Chen et al. 2023) and `optax.contrib.adopt` (Taniguchi et al.
2024). `cautious_aadamw` (the library's: the same mask on AAdamW's direction,
decay unmasked) asks whether acceleration adds anything on top of the mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import numpy as np
import optax

import aadam_optax

WARMUP_FRACTION = 0.05
GRID_POINTS = 9
DECADES = 3
ADAM_RATES = (1e-4, 1e-1)
LION_RATES = (1e-5, 1e-2)
# Decoupled decay, multiplied by the learning rate as in optax.adamw. Lion's is
# ten times larger, so that rate times decay is the same at matching points of
# the two grids (Lion's authors advise 3-10x).
WEIGHT_DECAY = 1e-2
LION_WEIGHT_DECAY = 1e-1


def schedule(peak: jax.Array, steps: int) -> optax.Schedule:
    """Warm-up then cosine decay to zero, peaking at `peak` (may be traced)."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    # Optax's schedule branches in Python on its peak value, so it is built
    # for a peak of one and scaled: the peak stays a traced argument.
    unit = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, steps, end_value=0.0)
    return lambda count: peak * unit(count)


# (schedule, decay) -> optimizer; `decay` (1 or 0) scales the decoupled weight
# decay of the optimizers that have one.
Factory = Callable[[optax.Schedule, float], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An optimizer: its learning-rate range and `schedule -> optax`."""

    rates: tuple[float, float]
    build: Factory
    relative: bool = False

    def grid(self, points: int = GRID_POINTS, above: int = 0) -> np.ndarray:
        """`points` peak rates, log-spaced over `rates` (both ends included),
        then `above` more past the top at the same spacing."""
        low, high = np.log10(self.rates)
        spacing = (high - low) / (points - 1)
        extra = high + spacing * np.arange(1, above + 1)
        return 10.0 ** np.concatenate([np.linspace(low, high, points), extra])

    def make(
        self, hyperparameters: Mapping[str, jax.Array], steps: int, decay: bool = True
    ) -> optax.GradientTransformation:
        """The optimizer at a (traced) peak learning rate, for the runner;
        without its decoupled weight decay where `decay` is False."""
        rate = schedule(hyperparameters["learning_rate"], steps)
        return self.build(rate, 1.0 if decay else 0.0)


OPTIMIZERS: dict[str, Candidate] = {
    "aadam_sign_change": Candidate(ADAM_RATES, lambda lr, _: aadam_optax.aadam(lr)),
    "adam": Candidate(ADAM_RATES, lambda lr, _: optax.adam(lr)),
    "aadamw": Candidate(
        ADAM_RATES,
        lambda lr, d: aadam_optax.aadamw(lr, weight_decay=WEIGHT_DECAY * d),
    ),
    "adamw": Candidate(
        ADAM_RATES, lambda lr, d: optax.adamw(lr, weight_decay=WEIGHT_DECAY * d)
    ),
    "cautious_adamw": Candidate(
        ADAM_RATES,
        lambda lr, d: aadam_optax.cautious_adamw(lr, weight_decay=WEIGHT_DECAY * d),
        relative=True,
    ),
    "cautious_aadamw": Candidate(
        ADAM_RATES,
        lambda lr, d: aadam_optax.cautious_aadamw(lr, weight_decay=WEIGHT_DECAY * d),
        relative=True,
    ),
    "lion": Candidate(
        LION_RATES,
        lambda lr, d: optax.lion(lr, weight_decay=LION_WEIGHT_DECAY * d),
        relative=True,
    ),
    "adopt": Candidate(
        ADAM_RATES, lambda lr, _: optax.contrib.adopt(lr), relative=True
    ),
}
# The optimizers of a full-grid run, in the order its runs interleave.
STUDY_OPTIMIZERS = tuple(OPTIMIZERS)
# The Adam family whose best final metric sets each workload's target.
ADAM_FAMILY = ("aadam_sign_change", "adam", "aadamw", "adamw")
# Each AAdam optimizer and the Optax optimizer it accelerates.
PAIRS = (("aadam_sign_change", "adam"), ("aadamw", "adamw"))
# The cautious question: does acceleration add on top of the mask, the mask on
# top of acceleration, the mask on AdamW?
CAUTIOUS_PAIRS = (
    ("cautious_aadamw", "cautious_adamw"),
    ("cautious_aadamw", "aadamw"),
    ("cautious_adamw", "adamw"),
)
