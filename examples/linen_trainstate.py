"""Train a Flax Linen MLP on the 8x8 digits with a `TrainState` and AAdamW.

AAdamW is an ordinary `optax.GradientTransformation`, so it goes straight into
`flax.training.train_state.TrainState.create(..., tx=aadamw(...))` and
`state.apply_gradients(grads=...)` does the rest.

    python examples/linen_trainstate.py --steps 600

Writes under --out: metrics.csv (step, batch loss) and summary.csv (final
training loss and test accuracy).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import aadam_optax


class MLP(nn.Module):
    """64 pixels -> hidden -> 10 logits."""

    hidden: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(10)(x)


def load_data(seed: int) -> tuple[np.ndarray, ...]:
    """Float32 digits, standardised with the training split's statistics."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=seed
    )
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # Border pixels are always 0: keep their scale rather than divide by 0.
    std = np.where(std > 0, std, 1.0)
    return (
        ((x_train - mean) / std).astype(np.float32),
        ((x_test - mean) / std).astype(np.float32),
        y_train.astype(np.int32),
        y_test.astype(np.int32),
    )


def loss_and_logits(
    params: optax.Params, apply_fn, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
    logits = apply_fn({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, logits


@jax.jit
def train_step(
    state: train_state.TrainState, x: jax.Array, y: jax.Array
) -> tuple[train_state.TrainState, jax.Array]:
    (loss, _), grads = jax.value_and_grad(loss_and_logits, has_aux=True)(
        state.params, state.apply_fn, x, y
    )
    return state.apply_gradients(grads=grads), loss


@jax.jit
def evaluate(
    state: train_state.TrainState,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training loss, test loss and test accuracy, in one compiled call."""
    train_loss, _ = loss_and_logits(state.params, state.apply_fn, x_train, y_train)
    test_loss, logits = loss_and_logits(state.params, state.apply_fn, x_test, y_test)
    return train_loss, test_loss, jnp.mean(jnp.argmax(logits, axis=-1) == y_test)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default="out/linen_trainstate")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    x_train, x_test, y_train, y_test = load_data(seed=0)
    model = MLP()
    params = model.init(jax.random.key(args.seed), x_train[:1])["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=aadam_optax.aadamw(args.lr, weight_decay=args.weight_decay),
    )

    rng = np.random.default_rng(args.seed)
    batch_size = min(args.batch_size, len(x_train))
    losses = []
    for _ in tqdm(range(args.steps), disable=args.quiet, desc="aadamw"):
        indices = rng.choice(len(x_train), size=batch_size, replace=False)
        state, loss = train_step(state, x_train[indices], y_train[indices])
        losses.append(loss)
    losses = [float(loss) for loss in jax.device_get(losses)]

    train_loss, test_loss, test_accuracy = evaluate(
        state, x_train, y_train, x_test, y_test
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "train_loss"])
        writer.writerows((step, f"{loss:.6g}") for step, loss in enumerate(losses, 1))
    summary = {
        "optimizer": "aadamw",
        "steps": int(state.step),
        "initial_batch_loss": losses[0],
        "final_train_loss": float(train_loss),
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
    }
    with open(args.out / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(summary))
        writer.writeheader()
        writer.writerow(summary)
    print(
        f"aadamw, {summary['steps']} steps: train loss "
        f"{summary['final_train_loss']:.4f} (first batch {losses[0]:.4f}), "
        f"test accuracy {summary['test_accuracy']:.4f}"
    )
    print(f"files in {args.out}/")


if __name__ == "__main__":
    main()
