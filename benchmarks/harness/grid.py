"""A runner that vectorises a `Task` over learning rates and seeds.

One compiled program holds every optimizer: on CPU a compilation has a large
fixed cost, so each (task, optimizer) cell compiles exactly once, together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from harness.problems import Task


def make_program(
    task: Task, optimizers: dict[str, Callable[[Any], optax.GradientTransformation]]
) -> Callable[[jax.Array, jax.Array], dict[str, dict[str, jax.Array]]]:
    """One compiled program running every optimizer on `task`.

    Returns a function `(learning_rates[L], seeds[S], task.data) -> {optimizer:
    dict}` whose
    arrays have leading axes (L, S): `curve` (the training objective at steps 0,
    1, ..., steps), and where the task has data `val_loss` and
    `test_accuracy`. Learning rates and seeds are vectorised with `vmap`; the
    optimizers share one program because on CPU a compilation has a large fixed
    cost, so each (task, optimizer) cell is compiled exactly once, together.
    """

    def program(
        learning_rates: jax.Array, seeds: jax.Array, data: Any
    ) -> dict[str, dict[str, jax.Array]]:
        results = {}
        for name, make_optimizer in optimizers.items():
            one = functools.partial(_run, task, make_optimizer)
            over_seeds = jax.vmap(one, in_axes=(None, 0, None))
            results[name] = jax.vmap(over_seeds, in_axes=(0, None, None))(
                learning_rates, seeds, data
            )
        return results

    return jax.jit(program)


def _run(
    task: Task,
    make_optimizer: Callable[[Any], optax.GradientTransformation],
    learning_rate: jax.Array,
    seed: jax.Array,
    data: Any,
) -> dict[str, jax.Array]:
    """One optimizer on `task` at one learning rate and seed: its curve and,
    where the task has data, its validation loss and test accuracy."""
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params = task.init(init_key)
    optimizer = make_optimizer(learning_rate)

    def step(carry: Any, n: jax.Array) -> tuple[Any, jax.Array]:
        params, state = carry
        grads = task.grad(params, data_key, n, data)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        # The exact objective after every step, so steps to target are exact.
        return (params, state), task.objective(params, data)

    initial = task.objective(params, data)[None]
    carry = (params, optimizer.init(params))
    (params, _), curve = jax.lax.scan(step, carry, jnp.arange(task.steps))
    out = {"curve": jnp.concatenate([initial, curve])}
    if task.evaluate is not None:
        out["val_loss"], out["test_accuracy"] = task.evaluate(params, data)
    return out
