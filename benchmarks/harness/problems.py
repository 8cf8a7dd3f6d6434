"""The convergence benchmark's small problems: digits, breast cancer, Rosenbrock
and quadratics, each a `Task` of pure functions over parameter pytrees."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from harness.models import average_pool, conv3x3

Params = Any


@dataclasses.dataclass(frozen=True)
class Task:
    """One optimisation problem and how it is measured.

    Attributes:
      name: identifier used in files.
      description: one line for the markdown report.
      batch: how gradients are computed ("full batch", "mini-batch 64", ...).
      steps: number of optimizer steps; the training objective is recorded
        after every one of them.
      lr_grid: log10 of the lowest and highest learning rate, and the count.
      init: `key -> params`.
      grad: `(params, key, step, data) -> gradient` (stochastic where the task
        is).
      objective: `(params, data) -> training objective` (exact, full data, no
        noise).
      evaluate: `(params, data) -> (validation loss, test accuracy)`, or `None`
        for synthetic tasks.
      data: arrays the functions read, passed to the compiled program as an
        argument: captured as constants instead, they make XLA's compilation
        several times slower.
    """

    name: str
    description: str
    batch: str
    steps: int
    lr_grid: tuple[float, float, int]
    init: Callable[[jax.Array], Params]
    grad: Callable[[Params, jax.Array, jax.Array, Any], Params]
    objective: Callable[[Params, Any], jax.Array]
    evaluate: Callable[[Params, Any], tuple[jax.Array, jax.Array]] | None = None
    data: Any = None

    def learning_rates(self) -> np.ndarray:
        low, high, count = self.lr_grid
        return np.logspace(low, high, int(count))


def _split(
    x: np.ndarray, y: np.ndarray, seed: int = 0
) -> dict[str, tuple[jax.Array, jax.Array]]:
    """A fixed 60/20/20 train/validation/test split (the same for every seed)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    return {k: (jnp.asarray(x[i]), jnp.asarray(y[i])) for k, i in parts.items()}


def _dense_init(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    return {
        "w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in),
        "b": jnp.zeros(fan_out),
    }


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@dataclasses.dataclass(frozen=True)
class _Classifier:
    """A classification task before its data is loaded and its steps scaled.

    Attributes:
      name, description: as in `Task`.
      dataset: the key of its data in `_DATASETS`.
      init: `key -> params`.
      logits: `(params, x) -> logits`.
      batch_size: examples per gradient, or `None` for full-batch gradients.
      l2: weight of the L2 penalty on the weights (not the biases).
      steps: optimizer steps at scale 1.
      lr_grid: as in `Task`.
    """

    name: str
    description: str
    dataset: str
    init: Callable[[jax.Array], Params]
    logits: Callable[[Params, jax.Array], jax.Array]
    batch_size: int | None
    l2: float
    steps: int
    lr_grid: tuple[float, float, int]


def _classifier_task(spec: _Classifier, data: Any, steps: int) -> Task:
    """`spec` as a `Task` on `data`, run for `steps` steps."""
    loss = _penalised_loss(spec.logits, spec.l2)

    def objective(params: Params, data: Any) -> jax.Array:
        return loss(params, *data["train"])

    batch = "full batch" if spec.batch_size is None else f"mini-batch {spec.batch_size}"
    return Task(
        spec.name,
        spec.description,
        batch,
        steps,
        spec.lr_grid,
        spec.init,
        _sampled_grad(loss, spec.batch_size),
        objective,
        _evaluator(spec.logits),
        data,
    )


def _penalised_loss(
    logits_fn: Callable[[Params, jax.Array], jax.Array], l2: float
) -> Callable[[Params, jax.Array, jax.Array], jax.Array]:
    """`(params, x, y) -> cross entropy + L2 penalty`."""

    def penalty(params: Params) -> jax.Array:
        # L2 on weights only, so the convex tasks have a unique minimiser.
        leaves = [p for path, p in _weights(params)]
        return 0.5 * l2 * sum(jnp.sum(w**2) for w in leaves)

    def loss(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        return _cross_entropy(logits_fn(params, x), y) + penalty(params)

    return loss


def _sampled_grad(
    loss: Callable[[Params, jax.Array, jax.Array], jax.Array], batch_size: int | None
) -> Callable[[Params, jax.Array, jax.Array, Any], Params]:
    """The gradient of `loss` on the training data, full batch or sampled."""

    def grad(params: Params, key: jax.Array, step: jax.Array, data: Any) -> Params:
        x_train, y_train = data["train"]
        if batch_size is None:
            return jax.grad(loss)(params, x_train, y_train)
        # Uniform sampling with replacement, keyed by (seed, step): the same
        # batch sequence for every optimizer and learning rate of a seed.
        index = jax.random.randint(
            jax.random.fold_in(key, step), (batch_size,), 0, x_train.shape[0]
        )
        return jax.grad(loss)(params, x_train[index], y_train[index])

    return grad


def _evaluator(
    logits_fn: Callable[[Params, jax.Array], jax.Array],
) -> Callable[[Params, Any], tuple[jax.Array, jax.Array]]:
    """`(params, data) -> (validation loss, test accuracy)`."""

    def evaluate(params: Params, data: Any) -> tuple[jax.Array, jax.Array]:
        x_val, y_val = data["val"]
        x_test, y_test = data["test"]
        val_loss = _cross_entropy(logits_fn(params, x_val), y_val)
        accuracy = jnp.mean(jnp.argmax(logits_fn(params, x_test), -1) == y_test)
        return val_loss, accuracy

    return evaluate


def _weights(params: Params) -> list[tuple[Any, jax.Array]]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [(path, p) for path, p in flat if str(path[-1]) != "['b']"]


def _digits() -> dict[str, tuple[jax.Array, jax.Array]]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _split((x / 16.0).astype(np.float32), y.astype(np.int32))


def _breast_cancer() -> dict[str, tuple[jax.Array, jax.Array]]:
    """Standardised with the training split's mean and standard deviation."""
    from sklearn.datasets import load_breast_cancer

    xb, yb = load_breast_cancer(return_X_y=True)
    cancer = _split(xb.astype(np.float32), yb.astype(np.int32))
    mean, std = cancer["train"][0].mean(0), cancer["train"][0].std(0)
    return {k: ((x - mean) / std, y) for k, (x, y) in cancer.items()}


_DATASETS: dict[str, Callable[[], dict[str, tuple[jax.Array, jax.Array]]]] = {
    "digits": _digits,
    "cancer": _breast_cancer,
}


def _digits_logreg_init(key: jax.Array) -> Params:
    return _dense_init(key, 64, 10)


def _cancer_logreg_init(key: jax.Array) -> Params:
    return _dense_init(key, 30, 2)


def _linear_logits(params: Params, x: jax.Array) -> jax.Array:
    return x @ params["w"] + params["b"]


def _mlp_init(key: jax.Array) -> Params:
    k1, k2 = jax.random.split(key)
    return {"hidden": _dense_init(k1, 64, 32), "out": _dense_init(k2, 32, 10)}


def _mlp_logits(params: Params, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


def _cnn_init(key: jax.Array) -> Params:
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "conv1": {
            "w": jax.random.normal(k1, (3, 3, 1, 4)) / 3.0,
            "b": jnp.zeros(4),
        },
        "conv2": {
            "w": jax.random.normal(k2, (3, 3, 4, 8)) / 6.0,
            "b": jnp.zeros(8),
        },
        "out": _dense_init(k3, 32, 10),
    }


def _cnn_logits(params: Params, x: jax.Array) -> jax.Array:
    h = x.reshape(-1, 8, 8, 1)
    h = average_pool(
        jax.nn.relu(conv3x3(h, params["conv1"]["w"]) + params["conv1"]["b"])
    )
    h = average_pool(
        jax.nn.relu(conv3x3(h, params["conv2"]["w"]) + params["conv2"]["b"])
    )
    h = h.reshape(h.shape[0], -1)
    return h @ params["out"]["w"] + params["out"]["b"]


_CLASSIFIERS = (
    _Classifier(
        "digits_logreg",
        "multinomial logistic regression on digits (convex, L2 1e-3)",
        "digits",
        _digits_logreg_init,
        _linear_logits,
        batch_size=None,
        l2=1e-3,
        steps=500,
        # Full-batch and convex: SGD's best step is near 1, so the grid
        # reaches past it.
        lr_grid=(-3.5, 1.5, 11),
    ),
    _Classifier(
        "digits_mlp",
        "MLP 64-32-10 (ReLU) on digits",
        "digits",
        _mlp_init,
        _mlp_logits,
        batch_size=32,
        l2=0.0,
        steps=600,
        lr_grid=(-4.0, 0.0, 9),
    ),
    _Classifier(
        "digits_cnn",
        "CNN conv3x3(4)-pool-conv3x3(8)-pool-dense on digits",
        "digits",
        _cnn_init,
        _cnn_logits,
        batch_size=32,
        l2=0.0,
        steps=600,
        lr_grid=(-4.0, 0.0, 9),
    ),
    _Classifier(
        "cancer_logreg",
        "logistic regression on breast cancer (standardised, convex, L2 1e-2)",
        "cancer",
        _cancer_logreg_init,
        _linear_logits,
        batch_size=None,
        l2=1e-2,
        steps=500,
        lr_grid=(-4.0, 0.0, 9),
    ),
)


def make_tasks(scale: float = 1.0) -> list[Task]:
    """All benchmark tasks; `scale` multiplies every step count (for --quick)."""

    def steps(n: int) -> int:
        return max(1, int(round(n * scale)))

    # Each dataset is loaded once and shared by the tasks that read it.
    data = {name: load() for name, load in _DATASETS.items()}
    classifiers = [
        _classifier_task(spec, data[spec.dataset], steps(spec.steps))
        for spec in _CLASSIFIERS
    ]
    return classifiers + _synthetic_tasks(steps)


def _synthetic_tasks(steps: Callable[[int], int]) -> list[Task]:
    return [
        _rosenbrock_task(2, steps(3000)),
        _rosenbrock_task(100, steps(3000)),
        _ill_conditioned_quadratic_task(steps(2000)),
        _noisy_quadratic_task(steps(2000)),
    ]


def _rosenbrock(x: jax.Array) -> jax.Array:
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _rosenbrock_task(dim: int, steps: int) -> Task:
    start = jnp.where(jnp.arange(dim) % 2 == 0, -1.2, 1.0)

    def init(key: jax.Array) -> jax.Array:
        # The classic start (-1.2, 1, -1.2, ...), jittered per seed.
        return start + 0.1 * jax.random.normal(key, (dim,))

    return Task(
        f"rosenbrock_{dim}d",
        f"Rosenbrock in {dim} dimensions from (-1.2, 1, ...) + N(0, 0.1^2)",
        "exact gradient",
        steps,
        (-5.0, 0.5, 12),
        init,
        lambda x, key, step, data: jax.grad(_rosenbrock)(x),
        lambda x, data: _rosenbrock(x),
    )


def _ill_conditioned_quadratic_task(steps: int) -> Task:
    # A rotated quadratic: Adam's per-coordinate scaling cannot undo the
    # conditioning because the eigenvectors are not the axes.
    dim, condition = 50, 1e4
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eigenvalues = np.logspace(0.0, -np.log10(condition), dim)
    hessian = jnp.asarray((rotation * eigenvalues) @ rotation.T, jnp.float32)

    def quadratic(x: jax.Array, hessian: jax.Array) -> jax.Array:
        return 0.5 * x @ hessian @ x

    def init(key: jax.Array) -> jax.Array:
        return jax.random.normal(key, (dim,))

    return Task(
        "quadratic_ill",
        f"rotated quadratic, dim {dim}, condition number {condition:.0e}",
        "exact gradient",
        steps,
        (-4.0, 1.0, 11),
        init,
        lambda x, key, step, hessian: jax.grad(quadratic)(x, hessian),
        quadratic,
        None,
        hessian,
    )


def _noisy_quadratic_task(steps: int) -> Task:
    # The noisy quadratic model: diagonal curvature h, gradient noise whose
    # variance is proportional to h (as for a mini-batch loss near a minimum).
    dim, noise = 100, 0.3
    curvature = jnp.asarray(np.logspace(0.0, -2.0, dim), jnp.float32)

    def objective(x: jax.Array, curvature: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(curvature * x**2)

    def grad(
        x: jax.Array, key: jax.Array, step: jax.Array, curvature: jax.Array
    ) -> jax.Array:
        xi = jax.random.normal(jax.random.fold_in(key, step), x.shape)
        return curvature * x + noise * jnp.sqrt(curvature) * xi

    def init(key: jax.Array) -> jax.Array:
        return jax.random.normal(key, (dim,))

    return Task(
        "quadratic_noisy",
        f"noisy quadratic, dim {dim}, curvature 1..1e-2, "
        f"gradient noise sd {noise}*sqrt(h)",
        "stochastic gradient",
        steps,
        (-4.0, 1.0, 11),
        init,
        grad,
        objective,
        None,
        curvature,
    )
