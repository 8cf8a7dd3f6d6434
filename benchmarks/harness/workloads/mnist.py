"""MNIST workloads: logistic regression, an MLP and a CNN on the same images."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from harness import data, models
from harness.workload import Workload

N_PIXELS = 28 * 28


@functools.cache
def _images() -> data.Split:
    return data.mnist()


def _workload(
    name: str,
    description: str,
    make_model: Callable[[nnx.Rngs], nnx.Module],
    steps: int,
    batch_size: int,
    eval_every: int,
) -> Workload:
    split = _images()
    return Workload(
        name=name,
        description=description,
        metric="validation error rate",
        make_model=make_model,
        loss=models.cross_entropy,
        metric_fn=models.error_rate,
        sample=lambda key, train: data.sample_images(key, *train, batch_size),
        train=tuple(jnp.asarray(a) for a in split["train"]),
        val=tuple(jnp.asarray(a) for a in split["val"]),
        steps=steps,
        eval_every=eval_every,
        batch_size=batch_size,
        # One validation example: a difference of one image is noise.
        tie=1 / len(split["val"][1]),
    )


def mnist_logreg(steps: int = 1000, eval_every: int = 10) -> Workload:
    return _workload(
        "mnist_logreg",
        "multinomial logistic regression on 4,000 MNIST digits (convex)",
        lambda rngs: models.LogisticRegression(N_PIXELS, rngs=rngs),
        steps,
        128,
        eval_every,
    )


def mnist_mlp(steps: int = 1000, eval_every: int = 10) -> Workload:
    return _workload(
        "mnist_mlp",
        "MLP 784-128-10 (ReLU) on 4,000 MNIST digits",
        lambda rngs: models.MLP(N_PIXELS, 128, rngs=rngs),
        steps,
        128,
        eval_every,
    )


def mnist_cnn(steps: int = 600, eval_every: int = 10) -> Workload:
    return _workload(
        "mnist_cnn",
        "CNN conv3x3(8)-pool-conv3x3(16)-pool-dense on 4,000 MNIST digits",
        lambda rngs: models.CNN((8, 16), rngs=rngs),
        steps,
        64,
        eval_every,
    )
