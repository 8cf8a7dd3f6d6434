"""Data-parallel AAdamW training across processes, with Orbax checkpoints and resume.

Every process runs this same program. Together they form one JAX job
(`jax.distributed.initialize`): a 1-D mesh over all devices of all processes
splits each batch of the 8x8 digits, params whose first axis divides evenly
over the devices are sharded along it too (as in FSDP/ZeRO), the rest are
replicated, and the AAdamW state follows the params through
`aadam_optax.state_shardings`. The model, data and batches are those of
orbax_resume.py: the batch of a step depends only on (seed, step), so a
resumed run needs no data-loader state.

An Orbax `CheckpointManager` saves params and optimizer state every
--save-every steps from all processes; Orbax commits a checkpoint only once all
its parts are written, so a crash during a save leaves the previous one as the
latest. `--resume` restores the latest committed checkpoint (or starts fresh
when there is none) and trains to --steps.

Two processes with two CPU devices each, on one machine:

    python examples/multihost_train.py --coordinator 127.0.0.1:12355 \\
        --num-processes 2 --process-id 0 --cpu-devices 2 &
    python examples/multihost_train.py --coordinator 127.0.0.1:12355 \\
        --num-processes 2 --process-id 1 --cpu-devices 2

On real hosts, start one process per host with the same --coordinator (the
first host's address and a free port), --num-processes and its own
--process-id, and an --out on a file system all hosts share.

Writes under --out: checkpoints/ (Orbax), metrics.csv (step and loss, appended
as training goes, by process 0), and at the end summary.json and
final_state.npz (the final params and optimizer state, gathered to host 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

import aadam_optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from orbax_resume import batch_indices, init_params, load_data, loss_fn  # noqa: E402

TrainState = dict[str, Any]


def start_runtime(args: argparse.Namespace) -> None:
    """Joins the multi-process job (before any other JAX call)."""
    if args.cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    # CPU collectives across processes need gloo; GPUs and TPUs ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.coordinator is not None:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )


def param_sharding(
    mesh: jax.sharding.Mesh, leaf: jax.ShapeDtypeStruct
) -> NamedSharding:
    if leaf.ndim and leaf.shape[0] % mesh.size == 0:
        return NamedSharding(mesh, PartitionSpec("data"))
    return NamedSharding(mesh, PartitionSpec())


def make_initial_state(
    args: argparse.Namespace, tx: optax.GradientTransformation, mesh: jax.sharding.Mesh
) -> tuple[Callable[[], TrainState], TrainState]:
    """A jitted function that builds the state in place, and its shardings."""
    make_params = partial(init_params, args.seed, args.hidden)
    abstract_params = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=param_sharding(mesh, leaf)
        ),
        jax.eval_shape(make_params),
    )
    shardings = {
        "params": jax.tree.map(lambda leaf: leaf.sharding, abstract_params),
        # Without these, jax.jit(tx.init) would leave the whole state on one
        # device: its zeros do not depend on the params' values.
        "opt_state": aadam_optax.state_shardings(tx, abstract_params),
    }

    @partial(jax.jit, out_shardings=shardings)
    def initial_state() -> TrainState:
        params = make_params()
        return {"params": params, "opt_state": tx.init(params)}

    return initial_state, shardings


def make_train_step(
    tx: optax.GradientTransformation, shardings: TrainState, mesh: jax.sharding.Mesh
) -> Callable[..., tuple[TrainState, jax.Array]]:
    replicated = NamedSharding(mesh, PartitionSpec())

    @partial(jax.jit, out_shardings=(shardings, replicated), donate_argnums=0)
    def train_step(state: TrainState, x: jax.Array, y: jax.Array):
        # The mean over the global batch: the compiler adds the all-reduce.
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], x, y)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, loss

    return train_step


def global_batch(
    data: tuple[np.ndarray, np.ndarray], indices: np.ndarray, mesh: jax.sharding.Mesh
) -> list[jax.Array]:
    """The batch as global arrays; each process fills only its devices' rows."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return [
        jax.make_array_from_callback(batch.shape, sharding, batch.__getitem__)
        for batch in (array[indices] for array in data)
    ]


def write_outputs(args: argparse.Namespace, state: TrainState, summary: dict) -> None:
    # Collective: every process takes part, process 0 writes.
    leaves = jax.tree_util.tree_leaves_with_path(state)
    arrays = {
        jax.tree_util.keystr(path): multihost_utils.process_allgather(leaf, tiled=True)
        for path, leaf in leaves
    }
    if jax.process_index() == 0:
        np.savez(args.out / "final_state.npz", **arrays)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--coordinator",
        default=None,
        help="host:port of process 0; default: a single process, no runtime",
    )
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="simulate this many devices per process on CPU",
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=20)
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="global, over all devices"
    )
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default="out/multihost_train")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0 <= args.process_id < args.num_processes:
        parser.error("need 0 <= --process-id < --num-processes")
    if args.num_processes > 1 and args.coordinator is None:
        parser.error("--num-processes > 1 needs --coordinator")
    if min(args.steps, args.save_every, args.keep, args.batch_size) < 1:
        parser.error("--steps, --save-every, --keep and --batch-size must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start_runtime(args)
    # Auto axes: the compiler propagates shardings through the step.
    mesh = jax.make_mesh(
        (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    if args.batch_size % mesh.size:
        raise SystemExit(
            f"--batch-size {args.batch_size} must divide over {mesh.size} devices"
        )
    is_writer = jax.process_index() == 0
    data = load_data()
    tx = aadam_optax.aadamw(args.lr, weight_decay=args.weight_decay)
    initial_state, shardings = make_initial_state(args, tx, mesh)
    train_step = make_train_step(tx, shardings, mesh)

    args.out.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=args.save_every, max_to_keep=args.keep
    )
    with ocp.CheckpointManager(
        (args.out / "checkpoints").resolve(), options=options
    ) as manager:
        start = manager.latest_step()
        if start is not None and not args.resume:
            raise SystemExit(
                f"{manager.directory} holds checkpoints: pass --resume or a new --out"
            )
        if start is None:
            state, start = initial_state(), 0
        else:
            # The target's shardings say where each restored array goes, in
            # every process; one built from an eager tx.init would put the step
            # count on process 0's first device.
            target = jax.eval_shape(initial_state)
            state = manager.restore(start, args=ocp.args.StandardRestore(target))

        # Where the state starts out, fresh or restored: the layout to check.
        start_specs = {
            jax.tree_util.keystr(path): str(leaf.sharding.spec)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)
        }
        # Written and flushed per step, by process 0: a crash shows where it
        # stopped.
        with (
            open(args.out / "metrics.csv", "a" if start else "w", newline="")
            if is_writer
            else nullcontext()
        ) as metrics:
            losses = []
            for step in tqdm(
                range(start, args.steps),
                desc=f"steps {start}..{args.steps}",
                disable=args.quiet or not is_writer,
            ):
                indices = batch_indices(args.seed, step, len(data[0]), args.batch_size)
                state, loss = train_step(state, *global_batch(data, indices, mesh))
                losses.append(float(loss))
                if metrics is not None:
                    csv.writer(metrics).writerow([step + 1, repr(losses[-1])])
                    metrics.flush()
                # The manager saves when step + 1 is a multiple of --save-every
                # (and, by Orbax's default policy, the first step).
                manager.save(step + 1, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()

    summary = {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "steps": args.steps,
        "resumed_from": start,
        "final_loss": losses[-1] if losses else None,
        "start_specs": start_specs,
    }
    write_outputs(args, state, summary)
    if is_writer:
        print(
            f"{summary['processes']} process(es), {summary['devices']} devices: "
            f"steps {start}..{args.steps}, final loss {summary['final_loss']}; "
            f"files in {args.out}/"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
