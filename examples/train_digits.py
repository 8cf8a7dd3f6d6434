"""Train a Flax NNX model on scikit-learn's 8x8 digits with AAdam and Adam.

Every optimizer starts from the same initialisation and sees the same batches in
the same order, so the loss curves differ only by the optimizer. The digits ship
with scikit-learn: nothing is downloaded.

    python examples/train_digits.py                      # MLP, aadam vs adam
    python examples/train_digits.py --model cnn --epochs 10
    python examples/train_digits.py --lr aadam=3e-3,adam=1e-3

Writes under --out: metrics.csv (the training loss of every step), summary.csv
(the printed table) and loss_curves.png.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import aadam_optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the Agg backend

# Each name maps a learning rate to an optax optimizer.
OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "aadam": aadam_optax.aadam,
    "adam": optax.adam,
    "aadamw": aadam_optax.aadamw,
    "adamw": optax.adamw,
    "aadamax": aadam_optax.aadamax,
    "adamax": optax.adamax,
    "aamsgrad": aadam_optax.aamsgrad,
    "amsgrad": optax.amsgrad,
}
DEFAULT_LEARNING_RATE = 1e-3
NUM_CLASSES = 10
TEST_FRACTION = 0.2
# The train/test split is fixed, so runs with different --seed share a test set.
SPLIT_SEED = 0


class MLP(nnx.Module):
    """64 pixels -> hidden -> hidden -> 10 logits."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs) -> None:
        self.layer1 = nnx.Linear(64, hidden, rngs=rngs)
        self.layer2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.layer1(x))
        x = jax.nn.relu(self.layer2(x))
        return self.head(x)


class CNN(nnx.Module):
    """Two 3x3 convolutions on the 8x8 image, 2x2 average pooling, a linear head."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, channels, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(channels, 2 * channels, kernel_size=(3, 3), rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 2 * channels, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], 8, 8, 1)
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        return self.head(x.reshape(x.shape[0], -1))


def build_model(name: str, seed: int) -> nnx.Module:
    rngs = nnx.Rngs(seed)
    if name == "mlp":
        return MLP(128, rngs=rngs)
    return CNN(16, rngs=rngs)


def load_data(
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as float32, standardised with the training split's statistics."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data,
        digits.target,
        test_size=TEST_FRACTION,
        random_state=seed,
        stratify=digits.target,
    )
    mean = x_train.mean(axis=0)
    # Border pixels are always 0: keep their scale at 1 rather than divide by 0.
    std = np.where(x_train.std(axis=0) > 0, x_train.std(axis=0), 1.0)
    standardise = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    return (
        standardise(x_train),
        standardise(x_test),
        y_train.astype(np.int32),
        y_test.astype(np.int32),
    )


def batch_order(
    num_examples: int, batch_size: int, epochs: int, seed: int
) -> list[np.ndarray]:
    """The index batches of every epoch, shared by all optimizers.

    The last incomplete batch of an epoch is dropped so every step has the same
    shape (one compilation).
    """
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(epochs):
        permutation = rng.permutation(num_examples)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            batches.append(permutation[start : start + batch_size])
    return batches


def cross_entropy(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(
    model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    loss, grads = nnx.value_and_grad(cross_entropy)(model, x, y)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def evaluate(
    model: nnx.Module,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Training-set loss and test accuracy, in one compiled call."""
    train_loss = cross_entropy(model, x_train, y_train)
    test_accuracy = jnp.mean(jnp.argmax(model(x_test), axis=-1) == y_test)
    return train_loss, test_accuracy


def parse_learning_rates(text: str | None, names: Sequence[str]) -> dict[str, float]:
    """`None` -> the default for all; `"1e-3"` -> one rate for all;
    `"aadam=3e-3,adam=1e-3"` -> per optimizer (unnamed ones get the default)."""
    rates = dict.fromkeys(names, DEFAULT_LEARNING_RATE)
    if text is None:
        return rates
    if "=" not in text:
        return dict.fromkeys(names, float(text))
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in rates:
            raise SystemExit(f"--lr names {name!r}, which is not in --optimizers.")
        rates[name] = float(value)
    return rates


def train(
    name: str,
    learning_rate: float,
    args: argparse.Namespace,
    data: tuple[np.ndarray, ...],
    batches: list[np.ndarray],
) -> tuple[list[float], dict[str, float | str]]:
    """Train one optimizer; return its per-step losses and its summary row."""
    x_train, x_test, y_train, y_test = data
    model = build_model(args.model, args.seed)
    optimizer = nnx.Optimizer(model, OPTIMIZERS[name](learning_rate), wrt=nnx.Param)
    losses = []
    start = time.perf_counter()
    for step, indices in enumerate(
        tqdm(batches, desc=f"{name:>9}", disable=args.quiet, leave=False)
    ):
        loss = train_step(model, optimizer, x_train[indices], y_train[indices])
        losses.append(loss)
        if step == 0:
            # The first step compiles; time it apart from the steady state.
            loss.block_until_ready()
            first_step_time = time.perf_counter() - start
    # One transfer at the end: asking for each loss as it comes would stall the
    # asynchronous dispatch every step.
    losses = [float(loss) for loss in jax.device_get(losses)]
    wall_time = time.perf_counter() - start
    train_loss, test_accuracy = evaluate(model, x_train, y_train, x_test, y_test)
    row = {
        "optimizer": name,
        "learning_rate": learning_rate,
        "final_train_loss": float(train_loss),
        "test_accuracy": float(test_accuracy),
        "wall_time_s": wall_time,
        "first_step_s": first_step_time,
        "steps_per_s": (len(batches) - 1) / max(wall_time - first_step_time, 1e-9),
    }
    return losses, row


def write_outputs(
    out: pathlib.Path,
    curves: dict[str, list[float]],
    rows: list[dict[str, float | str]],
    steps_per_epoch: int,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["optimizer", "step", "epoch", "train_loss"])
        for name, losses in curves.items():
            for step, loss in enumerate(losses, start=1):
                epoch = (step - 1) // steps_per_epoch + 1
                writer.writerow([name, step, epoch, f"{loss:.6g}"])
    with open(out / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, losses in curves.items():
        losses = np.asarray(losses)
        steps = np.arange(1, len(losses) + 1)
        (line,) = axis.plot(steps, losses, alpha=0.25, linewidth=0.8)
        # A per-epoch mean is easier to compare than the noisy batch losses.
        epochs = len(losses) // steps_per_epoch
        means = losses[: epochs * steps_per_epoch].reshape(epochs, -1).mean(axis=1)
        axis.plot(
            (np.arange(epochs) + 1) * steps_per_epoch,
            means,
            color=line.get_color(),
            marker="o",
            markersize=3,
            label=f"{name} (epoch mean)",
        )
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training cross-entropy (batch)")
    axis.set_title("8x8 digits: same init, same batches")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "loss_curves.png", dpi=120)
    plt.close(figure)


def print_table(rows: list[dict[str, float | str]]) -> None:
    header = (
        f"{'optimizer':<10} {'lr':>8} {'train loss':>11} {'test acc':>9} "
        f"{'wall s':>7} {'compile s':>9} {'steps/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['optimizer']:<10} {row['learning_rate']:>8.1e} "
            f"{row['final_train_loss']:>11.4f} {row['test_accuracy']:>9.4f} "
            f"{row['wall_time_s']:>7.2f} {row['first_step_s']:>9.2f} "
            f"{row['steps_per_s']:>8.0f}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument(
        "--optimizers",
        default="aadam,adam",
        help=f"comma-separated, from: {', '.join(OPTIMIZERS)}",
    )
    parser.add_argument(
        "--lr",
        default=None,
        help=(
            "one learning rate for all (e.g. 1e-3), or per optimizer "
            f"(e.g. aadam=3e-3,adam=1e-3); default {DEFAULT_LEARNING_RATE} each. "
            "At an equal rate AAdam's first step is b1 times Adam's."
        ),
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--seed", type=int, default=0, help="initialisation and batch order"
    )
    parser.add_argument("--out", type=pathlib.Path, default="out/train_digits")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.optimizers = [name.strip() for name in args.optimizers.split(",")]
    unknown = [name for name in args.optimizers if name not in OPTIMIZERS]
    if unknown:
        parser.error(f"unknown optimizers {unknown}; choose from {list(OPTIMIZERS)}")
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    args.lr = parse_learning_rates(args.lr, args.optimizers)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_data(SPLIT_SEED)
    num_train = len(data[0])
    if args.batch_size > num_train:
        raise SystemExit(f"--batch-size must be <= {num_train} (the training set)")
    batches = batch_order(num_train, args.batch_size, args.epochs, args.seed)
    steps_per_epoch = len(batches) // args.epochs
    if not args.quiet:
        print(
            f"digits: {num_train} train / {len(data[1])} test, model={args.model}, "
            f"{args.epochs} epochs x {steps_per_epoch} steps, "
            f"jax on {jax.default_backend()}"
        )
    curves, rows = {}, []
    for name in args.optimizers:
        curves[name], row = train(name, args.lr[name], args, data, batches)
        rows.append(row)
    write_outputs(args.out, curves, rows, steps_per_epoch)
    print_table(rows)
    print(
        "wall s: the whole training loop, including the first step's JIT "
        f"compilation (compile s); files in {args.out}/"
    )


if __name__ == "__main__":
    main()
