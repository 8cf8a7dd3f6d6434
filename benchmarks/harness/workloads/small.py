"""Small optimisation problems: scikit-learn's digits and breast cancer, the
Rosenbrock function, an ill-conditioned and a noisy quadratic.

These workloads measure optimisation, not generalisation: the metric is the
training objective itself (the full-data loss, without gradient noise), on a
log10 scale, `log10(max(f, FLOOR))`. On that scale one tie is 0.01 decades
(2.3 % of the objective), the same relative resolution on every problem,
whatever the objective's size; a target 5 ties above the best Adam-family
run is within 12 % of its objective.

The optimizers run without their decoupled weight decay here
(`decoupled_decay=False`), so on these problems AdamW is Adam and Cautious
AdamW is `cautious(adam)`; the classifiers that are meant to be regularised
carry their L2 penalty in the objective.

The floor, 1e-10, counts an objective that small as solved. In float32 the
objectives near a zero minimum (Rosenbrock's, the quadratics') take only
values like 0, 3.6e-15, 1.4e-14, ...: below about 1e-13 the metric would
measure rounding, not progress. The classifiers' objectives stay far above
it (their L2 penalty, or cross-entropy after 600 mini-batch steps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness import data, models
from harness.workload import Workload

FLOOR = 1e-10  # an objective at or below it counts as solved
TIE = 0.01  # decades of the objective


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 8x8 digits, NHWC in [0, 1], and their labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1), y.astype(np.int32)


@functools.cache
def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """All 569 cases, each feature standardised to mean 0 and sd 1."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y.astype(np.int32)


def _log_objective(f: jax.Array) -> jax.Array:
    return jnp.log10(jnp.maximum(f, FLOOR))


def _objective_workload(
    name: str,
    description: str,
    make_model: Callable[[nnx.Rngs], nnx.Module],
    objective: Callable[[nnx.Module, Any], jax.Array],
    loss: Callable[[nnx.Module, Any], jax.Array],
    sample: Callable[[jax.Array, Any], Any],
    train: Any,
    steps: int,
    eval_every: int,
    batch_size: int,
) -> Workload:
    """A workload whose metric is `log10` of `objective(model, train)`."""
    return Workload(
        name=name,
        description=description,
        metric=f"log10 training objective (floor {FLOOR:g})",
        make_model=make_model,
        loss=loss,
        metric_fn=lambda model, val: _log_objective(objective(model, val)),
        sample=sample,
        train=train,
        val=train,
        steps=steps,
        eval_every=eval_every,
        batch_size=batch_size,
        tie=TIE,
        # The problem is its own objective: a decoupled decay would move its
        # minimiser (AdamW's 1e-2 keeps Rosenbrock's objective near 1e-2.5).
        decoupled_decay=False,
    )


def _penalised(l2: float) -> Callable[[nnx.Module, Any], jax.Array]:
    """Cross-entropy plus `l2` times the squared weights (not the biases), so
    the convex problems have one minimiser."""

    def loss(model: nnx.Module, batch: Any) -> jax.Array:
        penalty = sum(
            jnp.sum(p[...] ** 2)
            for path, p in nnx.iter_graph(model)
            if isinstance(p, nnx.Param) and path[-1] == "kernel"
        )
        return models.cross_entropy(model, batch) + l2 * penalty

    return loss


def _classifier(
    name: str,
    description: str,
    arrays: tuple[np.ndarray, np.ndarray],
    make_model: Callable[[nnx.Rngs], nnx.Module],
    l2: float,
    batch_size: int | None,
    steps: int,
    eval_every: int,
) -> Workload:
    """Full-batch gradients where `batch_size` is None, else mini-batches."""
    loss = _penalised(l2)
    train = tuple(jnp.asarray(a) for a in arrays)
    if batch_size is None:
        batch_size = len(arrays[1])

        def sample(key: jax.Array, train: Any) -> Any:
            return train

    else:
        size = batch_size

        def sample(key: jax.Array, train: Any) -> Any:
            return data.sample_images(key, *train, size)

    return _objective_workload(
        name, description, make_model, loss, loss, sample, train, steps,
        eval_every, batch_size,
    )  # fmt: skip


def digits_logreg(steps: int = 500, eval_every: int = 10) -> Workload:
    return _classifier(
        "digits_logreg",
        "multinomial logistic regression on 1,797 8x8 digits, full batch "
        "(convex, L2 1e-3)",
        _digits(),
        lambda rngs: models.LogisticRegression(64, rngs=rngs),
        1e-3,
        None,
        steps,
        eval_every,
    )


def cancer_logreg(steps: int = 500, eval_every: int = 10) -> Workload:
    return _classifier(
        "cancer_logreg",
        "logistic regression on 569 breast-cancer cases, standardised, full "
        "batch (convex, L2 1e-2)",
        _breast_cancer(),
        lambda rngs: models.LogisticRegression(30, 2, rngs=rngs),
        1e-2,
        None,
        steps,
        eval_every,
    )


def digits_mlp(steps: int = 600, eval_every: int = 10) -> Workload:
    return _classifier(
        "digits_mlp",
        "MLP 64-32-10 (ReLU) on 1,797 8x8 digits, mini-batch 32",
        _digits(),
        lambda rngs: models.MLP(64, 32, rngs=rngs),
        0.0,
        32,
        steps,
        eval_every,
    )


def digits_cnn(steps: int = 600, eval_every: int = 10) -> Workload:
    return _classifier(
        "digits_cnn",
        "CNN conv3x3(4)-pool-conv3x3(8)-pool-dense on 1,797 8x8 digits, mini-batch 32",
        _digits(),
        lambda rngs: models.CNN((4, 8), side=8, rngs=rngs),
        0.0,
        32,
        steps,
        eval_every,
    )


class Point(nnx.Module):
    """The parameters of a synthetic problem: one vector."""

    def __init__(self, x: jax.Array) -> None:
        self.x = nnx.Param(x)


def _rosenbrock(x: jax.Array) -> jax.Array:
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _exact(
    name: str,
    description: str,
    init: Callable[[jax.Array], jax.Array],
    objective: Callable[[nnx.Module, Any], jax.Array],
    train: Any,
    steps: int,
    eval_every: int,
) -> Workload:
    """Exact gradients of `objective`."""
    return _objective_workload(
        name, description, lambda rngs: Point(init(rngs.params())), objective,
        objective, lambda key, train: train, train, steps, eval_every, 1,
    )  # fmt: skip


def _rosenbrock_workload(dim: int, steps: int, eval_every: int) -> Workload:
    start = jnp.where(jnp.arange(dim) % 2 == 0, -1.2, 1.0)
    return _exact(
        f"rosenbrock_{dim}d",
        f"Rosenbrock in {dim} dimensions from (-1.2, 1, ...) + N(0, 0.1^2), "
        "exact gradients",
        # The classic start, jittered per seed.
        lambda key: start + 0.1 * jax.random.normal(key, (dim,)),
        lambda model, train: _rosenbrock(model.x[...]),
        (),
        steps,
        eval_every,
    )


def rosenbrock_2d(steps: int = 3000, eval_every: int = 20) -> Workload:
    return _rosenbrock_workload(2, steps, eval_every)


def rosenbrock_100d(steps: int = 3000, eval_every: int = 20) -> Workload:
    return _rosenbrock_workload(100, steps, eval_every)


def quadratic_ill(steps: int = 2000, eval_every: int = 20) -> Workload:
    """A rotated quadratic: Adam's per-coordinate scaling cannot undo the
    conditioning, because the eigenvectors are not the axes."""
    dim, condition = 50, 1e4
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(dim, dim)))
    eigenvalues = np.logspace(0.0, -np.log10(condition), dim)
    hessian = jnp.asarray((rotation * eigenvalues) @ rotation.T, jnp.float32)

    def objective(model: nnx.Module, hessian: jax.Array) -> jax.Array:
        x = model.x[...]
        return 0.5 * x @ hessian @ x

    return _exact(
        "quadratic_ill",
        f"rotated quadratic, dim {dim}, condition number {condition:.0e}, "
        "exact gradients",
        lambda key: jax.random.normal(key, (dim,)),
        objective,
        hessian,
        steps,
        eval_every,
    )


def quadratic_noisy(steps: int = 2000, eval_every: int = 20) -> Workload:
    """The noisy quadratic model: diagonal curvature h, gradient noise whose
    variance is proportional to h, as for a mini-batch loss near a minimum.

    The sampled loss adds `noise * sqrt(h) . xi . x`, whose gradient is the
    noise; the metric is the noiseless objective."""
    dim, noise = 100, 0.3
    curvature = jnp.asarray(np.logspace(0.0, -2.0, dim), jnp.float32)

    def objective(model: nnx.Module, curvature: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(curvature * model.x[...] ** 2)

    def loss(model: nnx.Module, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        curvature, xi = batch
        x = model.x[...]
        return objective(model, curvature) + noise * jnp.sum(
            jnp.sqrt(curvature) * xi * x
        )

    def sample(key: jax.Array, curvature: jax.Array) -> tuple[jax.Array, jax.Array]:
        return curvature, jax.random.normal(key, curvature.shape)

    return _objective_workload(
        "quadratic_noisy",
        f"noisy quadratic, dim {dim}, curvature 1 to 1e-2, gradient noise sd "
        f"{noise} sqrt(h)",
        lambda rngs: Point(jax.random.normal(rngs.params(), (dim,))),
        objective,
        loss,
        sample,
        curvature,
        steps,
        eval_every,
        1,
    )
