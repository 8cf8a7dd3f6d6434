"""What a workload is: a model, its data, a loss, a validation metric, a budget."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

Batch = Any  # a pytree of arrays, e.g. (inputs, targets)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One training problem, in the shape the compiled runner needs.

    Attributes:
      name: identifier used in files and on the command line.
      description: one line for reports.
      metric: what `metric_fn` measures ("validation error rate", ...); lower
        is better.
      make_model: `rngs -> nnx.Module` holding only `nnx.Param` state.
      loss: `(model, batch) -> scalar` training loss.
      metric_fn: `(model, batch) -> scalar` validation metric.
      sample: `(key, train) -> batch`, a mini-batch of the training data.
      train: the training arrays (a pytree), passed to the compiled program as
        an argument: captured as constants they make XLA compile far slower.
      val: the validation batch `metric_fn` is evaluated on.
      steps: the step budget.
      eval_every: the validation metric is recorded every this many steps.
      batch_size: mini-batch size (for reports; `sample` already uses it).
      tie: the largest difference of the validation metric that paired
        comparisons call a tie, fixed with the workload before any run: the
        metric's noise, e.g. one validation example for an error rate.
      decoupled_decay: whether the optimizers that have a decoupled weight
        decay use it; False where the metric is the training objective
        itself, whose minimiser a decay would move.
    """

    name: str
    description: str
    metric: str
    make_model: Callable[[nnx.Rngs], nnx.Module]
    loss: Callable[[nnx.Module, Batch], jax.Array]
    metric_fn: Callable[[nnx.Module, Batch], jax.Array]
    sample: Callable[[jax.Array, Any], Batch]
    train: Any
    val: Batch
    steps: int
    eval_every: int
    batch_size: int
    tie: float
    decoupled_decay: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.eval_every < 1 or self.steps % self.eval_every:
            raise ValueError(
                f"{self.name}: steps ({self.steps}) must be a positive multiple "
                f"of eval_every ({self.eval_every})"
            )
        if not self.tie > 0:
            raise ValueError(f"{self.name}: tie ({self.tie}) must be positive")
