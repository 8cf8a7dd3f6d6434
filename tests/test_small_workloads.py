"""The study's small problems (`benchmarks/harness/workloads/small.py`): each
metric is log10 of its objective, checked against NumPy formulas written from
the problem's definition, and the sampled gradients are the ones stated."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from harness.workloads import SMALL, WORKLOADS, small  # noqa: E402


def _build(name):
    workload = WORKLOADS[name]()
    model = workload.make_model(nnx.Rngs(0))
    return workload, model


def _param(model, *path):
    state = nnx.state(model, nnx.Param)
    for key in path:
        state = state[key]
    return np.asarray(state[...], np.float64)


def _cross_entropy(logits, labels):
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


@pytest.mark.parametrize(
    "name, l2, classes",
    [("digits_logreg", 1e-3, 10), ("cancer_logreg", 1e-2, 2)],
)
def test_logistic_metric_is_log10_of_cross_entropy_plus_l2_on_the_kernel(
    name, l2, classes
):
    workload, model = _build(name)
    x, y = (np.asarray(a) for a in workload.val)
    kernel, bias = _param(model, "linear", "kernel"), _param(model, "linear", "bias")
    assert kernel.shape[1] == classes
    # The bias is not penalised: only the kernel's squares count.
    bias_shift = bias + 0.5
    nnx.update(
        model,
        nnx.State(
            {"linear": {"bias": nnx.Param(jnp.asarray(bias_shift, jnp.float32))}}
        ),
    )
    logits = x.reshape(len(x), -1) @ kernel + bias_shift
    expected = _cross_entropy(logits, y) + l2 * np.sum(kernel**2)
    got = float(workload.metric_fn(model, workload.val))
    assert got == pytest.approx(math.log10(expected), abs=1e-6)
    # Full batch: the training loss is the objective itself.
    batch = workload.sample(jax.random.key(3), workload.train)
    assert float(workload.loss(model, batch)) == pytest.approx(expected, rel=1e-5)


def test_mini_batch_problems_draw_batches_of_32_from_the_data():
    for name in ("digits_mlp", "digits_cnn"):
        workload, _ = _build(name)
        images, labels = workload.sample(jax.random.key(0), workload.train)
        assert images.shape == (32, 8, 8, 1) and labels.shape == (32,)
        assert workload.batch_size == 32


@pytest.mark.parametrize("name, dim", [("rosenbrock_2d", 2), ("rosenbrock_100d", 100)])
def test_rosenbrock_metric_and_start(name, dim):
    workload, model = _build(name)
    x = _param(model, "x")
    start = np.where(np.arange(dim) % 2 == 0, -1.2, 1.0)
    # The classic start jittered by N(0, 0.1^2): within 5 sd of it.
    assert np.all(np.abs(x - start) < 0.5)
    assert not np.allclose(x, start)
    f = np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    got = float(workload.metric_fn(model, workload.val))
    assert got == pytest.approx(math.log10(f), abs=1e-5)


def test_rosenbrock_near_its_minimum_reads_the_floor_not_rounding():
    workload, model = _build("rosenbrock_2d")
    # At the minimum, and a float32 step from it (f ~ 1e-14 or 0: rounding),
    # the metric is the floor, -10; 1e-4 away (f ~ 1e-8) it is above it.
    for x, expected in (
        ([1.0, 1.0], -10.0),
        ([1.0 + 2**-23, 1.0], -10.0),
        ([1.0 + 1e-4, 1.0], None),
    ):
        nnx.update(model, nnx.State({"x": nnx.Param(jnp.asarray(x, jnp.float32))}))
        got = float(workload.metric_fn(model, workload.val))
        if expected is None:
            x = np.asarray(x, np.float32).astype(np.float64)
            f = 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2
            assert got > -10 and got == pytest.approx(math.log10(f), abs=0.01)
        else:
            assert got == pytest.approx(expected, abs=1e-6)
    assert small.FLOOR == 1e-10


def test_ill_conditioned_quadratic_has_the_stated_spectrum():
    workload, model = _build("quadratic_ill")
    hessian = np.asarray(workload.val, np.float64)
    eigenvalues = np.sort(np.linalg.eigvalsh(hessian))[::-1]
    np.testing.assert_allclose(
        eigenvalues, np.logspace(0, -4, 50), rtol=1e-3, atol=1e-7
    )
    # Rotated: far from diagonal.
    assert np.abs(hessian - np.diag(np.diag(hessian))).max() > 0.05
    x = _param(model, "x")
    got = float(workload.metric_fn(model, workload.val))
    assert got == pytest.approx(math.log10(0.5 * x @ hessian @ x), abs=1e-5)


def test_noisy_quadratic_gradient_is_curvature_times_x_plus_scaled_noise():
    workload, model = _build("quadratic_noisy")
    curvature = np.logspace(0, -2, 100)
    np.testing.assert_allclose(np.asarray(workload.val), curvature, rtol=1e-6)
    x = _param(model, "x")
    got = float(workload.metric_fn(model, workload.val))
    assert got == pytest.approx(math.log10(0.5 * np.sum(curvature * x**2)), abs=1e-5)

    def grad(key):
        batch = workload.sample(key, workload.train)
        return np.asarray(
            nnx.grad(workload.loss)(model, batch)["x"][...], np.float64
        ), np.asarray(batch[1], np.float64)

    g, xi = grad(jax.random.key(7))
    np.testing.assert_allclose(
        g, curvature * x + 0.3 * np.sqrt(curvature) * xi, rtol=1e-4, atol=1e-6
    )
    # The noise has mean zero: over many draws the mean gradient is h x.
    draws = [grad(k)[0] for k in jax.random.split(jax.random.key(1), 400)]
    spread = 0.3 * np.sqrt(curvature) / math.sqrt(400)
    assert np.all(np.abs(np.mean(draws, 0) - curvature * x) < 5 * spread)


def test_every_small_problem_is_registered_with_the_objective_tie():
    assert set(SMALL) <= set(WORKLOADS)
    for name in SMALL:
        workload = WORKLOADS[name](steps=20, eval_every=10)
        assert workload.metric == "log10 training objective (floor 1e-10)"
        assert workload.tie == 0.01
        assert workload.name == name


def test_without_decoupled_decay_adamw_is_adam_on_the_small_problems():
    # The small problems turn the decays off: AdamW's curve is Adam's, bit for
    # bit; on a workload that keeps them the two differ.
    import functools

    from harness.optimizers import OPTIMIZERS
    from harness.runner import make_train

    def curve(workload, name):
        make = functools.partial(OPTIMIZERS[name].make, decay=workload.decoupled_decay)
        args = ({"learning_rate": jnp.float32(0.3)}, jnp.int32(1))
        return np.asarray(
            make_train(workload, make)(*args, workload.train, workload.val)
        )

    small_one = WORKLOADS["rosenbrock_2d"](steps=200, eval_every=20)
    assert not small_one.decoupled_decay
    np.testing.assert_array_equal(curve(small_one, "adamw"), curve(small_one, "adam"))
    decayed = dataclasses.replace(small_one, decoupled_decay=True)
    assert not np.array_equal(curve(decayed, "adamw"), curve(decayed, "adam"))
