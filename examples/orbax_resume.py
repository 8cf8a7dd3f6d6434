"""Checkpoint AAdam mid-training with Orbax, resume, and get the same trajectory.

The optimizer state is a tree of arrays (`ScaleByAAdamState`: an int32 count,
float moments, the previous direction and the int8 signs of the previous
gradient), so Orbax saves it like the params. Restoring needs the tree's
structure, dtypes and shardings: pass an abstract target, the
`jax.eval_shape` of the jitted init with `aadam_optax.state_shardings` as its
`out_shardings` (a target from an eager `tx.init` would restore the step count
onto one device, which breaks a multi-device or multi-process resume).

The program trains a small MLP on the 8x8 digits for --steps steps without
interruption, then trains again, saves params and optimizer state at
--save-at, throws everything in memory away, restores from disk and finishes.
Both runs must agree bit for bit; the program exits with status 1 otherwise.

    python examples/orbax_resume.py --steps 200 --save-at 80

Writes under --out: checkpoints/ (the Orbax checkpoint, replaced on each run),
trajectory.csv (the loss of every step for both runs) and summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import shutil
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from sklearn.datasets import load_digits
from tqdm import tqdm

import aadam_optax


def load_data() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    x = digits.data
    std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    return ((x - x.mean(axis=0)) / std).astype(np.float32), digits.target.astype(
        np.int32
    )


def init_params(seed: int, hidden: int) -> dict[str, jax.Array]:
    key1, key2 = jax.random.split(jax.random.key(seed))
    return {
        "w1": jax.random.normal(key1, (64, hidden)) / 8.0,
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(key2, (hidden, 10)) / np.sqrt(hidden),
        "b2": jnp.zeros(10),
    }


def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    hidden = jax.nn.relu(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def batch_indices(seed: int, step: int, num_examples: int, size: int) -> np.ndarray:
    # The batch depends only on (seed, step): a resumed run needs no RNG state.
    return np.random.default_rng([seed, step]).choice(num_examples, size, replace=False)


def make_train_step(tx: optax.GradientTransformation):
    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def run(train_step, params, opt_state, data, args, steps: range, desc: str):
    x, y = data
    losses = []
    for step in tqdm(steps, desc=desc, disable=args.quiet, leave=False):
        indices = batch_indices(args.seed, step, len(x), args.batch_size)
        params, opt_state, loss = train_step(params, opt_state, x[indices], y[indices])
        losses.append(loss)
    return params, opt_state, [float(loss) for loss in jax.device_get(losses)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument(
        "--save-at", type=int, default=None, help="default: half of --steps"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default="out/orbax_resume")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.save_at is None:
        args.save_at = args.steps // 2
    if not 0 < args.save_at < args.steps:
        parser.error("need 0 < --save-at < --steps")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = load_data()
    tx = aadam_optax.aadam(args.lr)
    train_step = make_train_step(tx)

    def fresh_start():
        params = init_params(args.seed, args.hidden)
        return params, init_state(params)

    # Jitted, the init would not know where its zeros go: state_shardings puts
    # each leaf next to its param (here all on one device).
    template = init_params(args.seed, args.hidden)
    init_state = jax.jit(
        tx.init, out_shardings=aadam_optax.state_shardings(tx, template)
    )

    # 1. The reference: one uninterrupted run.
    params, opt_state = fresh_start()
    reference_params, _, reference_losses = run(
        train_step, params, opt_state, data, args, range(args.steps), "uninterrupted"
    )

    # 2. Train to --save-at and checkpoint params and optimizer state.
    directory = (args.out / "checkpoints").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    params, opt_state = fresh_start()
    params, opt_state, first_losses = run(
        train_step, params, opt_state, data, args, range(args.save_at), "first part"
    )
    with ocp.CheckpointManager(directory) as manager:
        manager.save(
            args.save_at,
            args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
        )
        manager.wait_until_finished()
    del params, opt_state

    # 3. Resume from disk. The target gives Orbax the NamedTuple structure and
    # the dtypes (int32 count, int8 signs) to restore into.
    abstract = {
        "params": jax.tree.map(ocp.utils.to_shape_dtype_struct, template),
        "opt_state": jax.eval_shape(init_state, template),
    }
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    params, opt_state = restored["params"], restored["opt_state"]
    count = opt_state[0].count
    signs = jax.tree.leaves(opt_state[0].prev_grad_sign)
    params, _, second_losses = run(
        train_step, params, opt_state, data, args, range(step, args.steps), "resumed"
    )

    resumed_losses = first_losses + second_losses
    identical = resumed_losses == reference_losses and all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(params), jax.tree.leaves(reference_params), strict=True
        )
    )
    max_param_difference = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(params), jax.tree.leaves(reference_params), strict=True
        )
    )

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "trajectory.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["step", "loss_uninterrupted", "loss_resumed"])
        for step_number, (a, b) in enumerate(
            zip(reference_losses, resumed_losses, strict=True), start=1
        ):
            writer.writerow([step_number, repr(a), repr(b)])
    summary = {
        "steps": args.steps,
        "saved_at": int(step),
        "restored_count": int(count),
        "restored_count_dtype": str(count.dtype),
        "restored_prev_grad_sign_dtypes": sorted({str(s.dtype) for s in signs}),
        "first_loss": reference_losses[0],
        "final_loss_uninterrupted": reference_losses[-1],
        "final_loss_resumed": resumed_losses[-1],
        "max_abs_param_difference": max_param_difference,
        "bitwise_identical": identical,
        "checkpoint_dir": str(directory),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"saved at step {summary['saved_at']} (count {summary['restored_count']}, "
        f"{summary['restored_count_dtype']}; signs "
        f"{summary['restored_prev_grad_sign_dtypes']}), resumed to {args.steps}: "
        f"final loss {reference_losses[-1]:.6f} uninterrupted, "
        f"{resumed_losses[-1]:.6f} resumed"
    )
    print(
        "bitwise identical" if identical else "MISMATCH",
        f"(max |param difference| {max_param_difference:.3g}); files in {args.out}/",
    )
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
