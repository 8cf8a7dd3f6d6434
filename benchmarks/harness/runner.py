"""The compiled training loop shared by every benchmark.

`make_train` turns a workload and an optimizer factory into one jitted
function `(hyperparameters, seed, train, val) -> curves`: the whole run is a
`jax.lax.scan` over steps (no Python per step), with the validation metric
recorded every `eval_every` steps. The
hyperparameters are traced arguments, so every trial of one optimizer reuses
one compilation; `vmap` over them gives a grid in one program.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from harness.workload import Workload

Hyperparameters = Mapping[str, jax.Array]
# (hyperparameters, step budget) -> optimizer; see harness.optimizers.
OptimizerFactory = Callable[[Hyperparameters, int], optax.GradientTransformation]


def make_train(
    workload: Workload, make_optimizer: OptimizerFactory
) -> Callable[[Hyperparameters, jax.Array, Any, Any], jax.Array]:
    """One compiled training run of `workload`.

    The returned function maps `(hyperparameters, seed, workload.train,
    workload.val)` to the validation metric at steps 0, eval_every, ..., steps.
    A seed sets the initial parameters and the mini-batch sequence; the same
    seed gives every optimizer the same batches.
    """
    n_blocks = workload.steps // workload.eval_every

    def train(
        hyperparameters: Hyperparameters, seed: jax.Array, train_data: Any, val: Any
    ) -> jax.Array:
        init_key, data_key = jax.random.split(jax.random.key(seed))
        graphdef, params = nnx.split(workload.make_model(nnx.Rngs(init_key)))
        optimizer = make_optimizer(hyperparameters, workload.steps)

        def loss(params: Any, batch: Any) -> jax.Array:
            return workload.loss(nnx.merge(graphdef, params), batch)

        def metric(params: Any) -> jax.Array:
            return workload.metric_fn(nnx.merge(graphdef, params), val)

        def step(carry: Any, n: jax.Array) -> tuple[Any, None]:
            params, state = carry
            batch = workload.sample(jax.random.fold_in(data_key, n), train_data)
            grads = jax.grad(loss)(params, batch)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        def block(carry: Any, b: jax.Array) -> tuple[Any, jax.Array]:
            # Nested scans record the metric every `eval_every` steps without a
            # `cond`, which `vmap` would turn into evaluating on every step.
            first = b * workload.eval_every
            steps = first + jnp.arange(workload.eval_every)
            carry, _ = jax.lax.scan(step, carry, steps)
            return carry, metric(carry[0])

        initial = metric(params)
        carry = (params, optimizer.init(params))
        _, metrics = jax.lax.scan(block, carry, jnp.arange(n_blocks))
        return jnp.concatenate([initial[None], metrics])

    return jax.jit(train)


def steps_to_target(
    curve: jax.Array | Any, target: float, every: int
) -> tuple[int, bool]:
    """First recorded step at which `curve` (lower is better) is <= `target`.

    `curve[i]` is the value at step `i * every`. Returns (step, reached); where
    the target is never reached, the step is the last one recorded.
    """
    below = jnp.asarray(curve) <= target
    reached = bool(below.any())
    index = int(jnp.argmax(below)) if reached else len(below) - 1
    return index * every, reached
