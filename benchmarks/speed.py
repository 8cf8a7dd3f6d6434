"""Speed and memory of a training step: the AAdam family against `optax.adam`.

Four measurements, each interleaved (every optimizer runs once per round, in a
rotating order) so that a noisy machine slows all of them alike; a ratio is
taken within each round and its median and interquartile range are reported.

* Isolated update: `update` + `optax.apply_updates` on parameters of one leaf
  or of many mixed-size leaves. A bandwidth probe (a fused `y + a * x`) in the
  same rounds turns each optimizer's minimal memory traffic into a floor time.
  Each step's compiled HLO is read too (copies of large buffers, fusions,
  XLA's own estimate of bytes accessed), and state bytes per parameter counted.
* Whole training step (forward, backward, update) of the digits MLP of
  `examples/train_digits.py` and of the MNIST CNN and byte Transformer of the
  real-workloads benchmark (`benchmarks/harness`).
* XLA:CPU's multi-output fusion: the isolated update at the largest size in
  fresh processes with and without
  `XLA_FLAGS=--xla_backend_extra_options=xla_cpu_use_multi_output_fusion=true`.
* Dispatch: the host-side time of one jitted `update` call on many small leaves.

The cautious optimizers (`cautious_adamw`, `cautious_aadamw`) mask a direction
leaf by leaf, with one reduction (a count) per leaf. Each is timed in the same
rounds as the optimizer it masks (adamw, aadamw), and its ratio to that
reference, taken within each round, is the cost of the mask alone: the goal
is at most 1.03 for the Transformer's whole step.

A sample runs k steps inside one compiled loop (the same k for every optimizer
of a case, chosen so a sample takes about --sample-ms, or --step-sample-ms for
a whole training step), so it times the step,
not Python's call overhead. The exception is a convolutional model on CPU:
XLA:CPU runs convolutions many times slower inside a loop body
(jax-ml/jax#12868), so there a sample is back-to-back calls of a compiled
function that runs 8 steps written out, and one block at the end.

    python benchmarks/speed.py                 # CPU defaults, about 8 minutes
    python benchmarks/speed.py --quick         # seconds, small sizes
    python benchmarks/speed.py --backend gpu   # on a CUDA machine, adds 1e8 and 3e8

Results go to --out: speed.csv, speed.md, speed.png and speed_run.json (the
command, wall time and provenance: commit, versions, numerics fingerprint).
`--report-only` rewrites speed.md and speed.png from speed.csv and
speed_run.json (`harness/speed_report.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from harness import environment, provenance, records, speed_report
from harness.speed_report import AADAM, MULTI_OUTPUT_FUSION, REFERENCES
from harness.timing import (
    Contender,
    Quartiles,
    Step,
    compile_sample,
    per_round,
    quartiles,
    time_interleaved,
)
from tqdm import tqdm

import aadam_optax

LEARNING_RATE = 1e-3
# Steps written out in one compiled call where a loop cannot be used (a CNN on
# CPU): enough that the call's dispatch is a small part, few enough to compile
# in seconds.
UNROLLED_STEPS = 8
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def optimizers() -> dict[str, optax.GradientTransformation]:
    """The optimizers timed; `adam` is the reference for every ratio."""
    family = {
        f"aadam[{variant}]": aadam_optax.aadam(LEARNING_RATE, variant=variant)
        for variant in aadam_optax.VARIANTS
    }
    return {
        "adam": optax.adam(LEARNING_RATE),
        "adamw": optax.adamw(LEARNING_RATE),
        **family,
        "aadamw": aadam_optax.aadamw(LEARNING_RATE),
        "aadamax": aadam_optax.aadamax(LEARNING_RATE),
        "aamsgrad": aadam_optax.aamsgrad(LEARNING_RATE),
        # The cautious mask over AdamW's and AAdamW's directions, decay (the
        # same default 1e-4 as adamw's and aadamw's) unmasked.
        "cautious_adamw": aadam_optax.cautious_adamw(LEARNING_RATE),
        "cautious_aadamw": aadam_optax.cautious_aadamw(LEARNING_RATE),
    }


# The whole-step and many-leaf optimizers by default (those of them among
# --optimizers): AAdam against Adam, and each cautious optimizer with the
# optimizer it masks, its like-for-like reference (`speed_report.REFERENCES`).
STEP_OPTIMIZERS = (
    "adam",
    AADAM,
    "adamw",
    "cautious_adamw",
    "aadamw",
    "cautious_aadamw",
)


def state_options() -> dict[str, optax.GradientTransformation]:
    """Optimizers whose state size is reported, dtype options included."""
    low = jnp.bfloat16
    return {
        "adam": optax.adam(LEARNING_RATE),
        "adam(mu_dtype=bf16)": optax.adam(LEARNING_RATE, mu_dtype=low),
        "aadam": aadam_optax.aadam(LEARNING_RATE),
        "aadam(mu_dtype=bf16, prev_update_dtype=bf16)": aadam_optax.aadam(
            LEARNING_RATE, mu_dtype=low, prev_update_dtype=low
        ),
        "aadamw": aadam_optax.aadamw(LEARNING_RATE),
        "aadamax": aadam_optax.aadamax(LEARNING_RATE),
        "aamsgrad": aadam_optax.aamsgrad(LEARNING_RATE),
        "cautious_adamw": aadam_optax.cautious_adamw(LEARNING_RATE),
        "cautious_aadamw": aadam_optax.cautious_aadamw(LEARNING_RATE),
    }


def make_params(size: int, layout: str, dtype: Any, leaves: int) -> dict[str, Any]:
    """One leaf of `size` params, or `leaves` leaves of mixed sizes summing to it.

    The arrays are NumPy ones on the host: `jax.device_put` moves them without
    compiling anything, where a JAX constructor would compile once per shape.
    """
    if layout == "one":
        return {"w": np.ones((size,), dtype)}
    # Mixed sizes: a geometric spread, like a network's biases, kernels and
    # embeddings, rescaled so the total is exactly `size`.
    weights = np.geomspace(1.0, 1000.0, leaves)
    counts = np.maximum(1, np.floor(weights / weights.sum() * size)).astype(int)
    counts[-1] += size - counts.sum()
    return {f"leaf_{i:03d}": np.ones((int(c),), dtype) for i, c in enumerate(counts)}


def tree_bytes(tree: Any) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree) if leaf.ndim > 0)


def update_step(opt: optax.GradientTransformation) -> Step:
    """The isolated update: `update` then `apply_updates`, on given gradients."""

    def step(carry: Any, i: jax.Array, grads: Any) -> Any:
        params, state = carry
        # A step-dependent positive scale: each step's gradient differs, as in
        # training, so XLA cannot hoist gradient-only work out of the loop.
        scale = 1.0 + 1e-3 * i.astype(jnp.float32)
        grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def bandwidth_step(y: jax.Array, i: jax.Array, x: jax.Array) -> jax.Array:
    """A fused `y + a * x`: reads two arrays and writes one, nothing else."""
    return y + (0.5 + 1e-3 * i.astype(jnp.float32)).astype(y.dtype) * x


COPY_PATTERN = re.compile(r"= \w+\[(\d+)\]\{0\} copy\(")


def hlo_facts(compiled: Any) -> dict[str, float]:
    """Copies of large buffers, fusions, and XLA's bytes-accessed estimate."""
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :]
    copies = [int(n) for n in COPY_PATTERN.findall(entry) if int(n) > 1]
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return {
        "large_copies": len(copies),
        "fusions": entry.count(" fusion("),
        "xla_bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
    }


def single_step_facts(
    opt: optax.GradientTransformation, params: Any, state: Any, grads: Any
) -> dict[str, float]:
    """HLO facts of one donated step outside any loop (XLA's cost analysis does
    not see through a loop's trip count)."""

    def step(params: Any, state: Any, grads: Any) -> Any:
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads)
    return hlo_facts(compiled.compile())


@dataclasses.dataclass
class Case:
    layout: str
    dtype: str
    size: int


def timing_columns(times: Quartiles, ratios: Quartiles) -> dict[str, float]:
    """A row's timing: milliseconds per step and the ratio to adam's time in
    the same round, each a median and its interquartile range."""
    return {
        "median_ms": times.median,
        "q25_ms": times.q25,
        "q75_ms": times.q75,
        "ratio_to_adam": ratios.median,
        "ratio_q25": ratios.q25,
        "ratio_q75": ratios.q75,
    }


def timed(contenders: dict[str, Contender], name: str) -> dict[str, Any]:
    """`timing_columns` against adam and, for a cautious optimizer, its ratio
    to the optimizer it masks in the same rounds (`reference_columns`)."""
    seconds = contenders[name].seconds
    columns: dict[str, Any] = timing_columns(
        *per_round(seconds, contenders["adam"].seconds)
    )
    reference = REFERENCES.get(name)
    if reference in contenders:
        _, ratios = per_round(seconds, contenders[reference].seconds)
        columns |= reference_columns(reference, ratios)
    return columns


def reference_columns(reference: str, ratios: Quartiles) -> dict[str, Any]:
    """The like-for-like ratio: time / `reference`'s time, round by round."""
    return {
        "reference": reference,
        "ratio_to_reference": ratios.median,
        "reference_ratio_q25": ratios.q25,
        "reference_ratio_q75": ratios.q75,
    }


def isolated_contender(
    opt: optax.GradientTransformation, host_params: Any, grads: Any, read_hlo: bool
) -> tuple[Contender, dict[str, Any]]:
    """The timed update of `opt`, and its HLO facts and minimal bytes moved."""
    params = jax.device_put(host_params)
    state = jax.jit(opt.init)(params)
    facts: dict[str, Any] = (
        single_step_facts(opt, params, state, grads)
        if read_hlo
        else dict.fromkeys(("large_copies", "fusions", "xla_bytes_accessed"), "")
    )
    facts["min_bytes"] = (
        2 * tree_bytes(params) + tree_bytes(grads) + 2 * tree_bytes(state)
    )
    carry = (jax.device_put(host_params), state)
    sample = compile_sample(update_step(opt), carry, grads, in_loop=True)
    return Contender(sample, carry, grads), facts


def time_isolated_case(
    case: Case,
    opts: dict[str, optax.GradientTransformation],
    args: argparse.Namespace,
    read_hlo: bool,
) -> list[dict[str, Any]]:
    dtype = jnp.dtype(case.dtype)
    host_params = make_params(case.size, case.layout, dtype, args.leaves)
    rng = np.random.default_rng(0)
    grads = jax.device_put(
        jax.tree.map(
            lambda p: rng.standard_normal(p.shape, np.float32).astype(p.dtype),
            host_params,
        )
    )
    contenders, facts = {}, {}
    for name, opt in opts.items():
        contenders[name], facts[name] = isolated_contender(
            opt, host_params, grads, read_hlo
        )
    x = jax.device_put(np.ones((case.size,), dtype))
    y = jax.device_put(np.zeros((case.size,), dtype))
    contenders["probe"] = Contender(compile_sample(bandwidth_step, y, x, True), y, x)
    k = time_interleaved(contenders, args.repeats, args.sample_ms / 1e3)
    bandwidth = 3 * x.nbytes / float(np.median(contenders["probe"].seconds))
    return [
        {
            "section": "isolated update",
            "case": f"{case.layout} leaf layout, {case.dtype}",
            "layout": case.layout,
            "dtype": case.dtype,
            "size": case.size,
            "optimizer": name,
            **timed(contenders, name),
            "steps_per_sample": k,
            "samples": args.repeats,
            **hlo_columns(facts[name], case.size, bandwidth, contenders[name]),
        }
        for name in opts
    ]


def hlo_columns(
    facts: dict[str, Any], size: int, bandwidth: float, contender: Contender
) -> dict[str, Any]:
    """Bytes moved per parameter (minimal and XLA's estimate), the fraction of
    the bandwidth floor the step reached, and the HLO's copies and fusions."""
    seconds = float(np.median(contender.seconds))
    xla_bytes = facts["xla_bytes_accessed"]
    return {
        "min_bytes_per_param": facts["min_bytes"] / size,
        "xla_bytes_per_param": xla_bytes and xla_bytes / size,
        "floor_fraction": facts["min_bytes"] / bandwidth / seconds,
        "probe_gb_per_s": bandwidth / 1e9,
        "large_copies": facts["large_copies"],
        "fusions": facts["fusions"],
    }


@dataclasses.dataclass
class Model:
    """A model's whole training step: what it is, how to build it and feed it."""

    name: str
    description: str
    make_model: Callable[[nnx.Rngs], nnx.Module]
    loss: Callable[[nnx.Module, Any], jax.Array]
    sample: Callable[[jax.Array, Any], Any]  # (key, train data) -> batch
    train: Any
    has_convolutions: bool = False


def digits_mlp() -> Model:
    """The main job's MLP (`examples/train_digits.py`), batch 32."""
    sys.path.insert(0, str(EXAMPLES))
    import train_digits
    from harness.data import sample_images

    x_train, _, y_train, _ = train_digits.load_data(train_digits.SPLIT_SEED)
    return Model(
        name="digits_mlp",
        description="the main job's MLP 64-128-128-10, batch 32",
        make_model=lambda rngs: train_digits.MLP(128, rngs=rngs),
        loss=lambda model, batch: train_digits.cross_entropy(model, *batch),
        sample=lambda key, train: sample_images(key, *train, 32),
        train=(jnp.asarray(x_train), jnp.asarray(y_train)),
    )


def workload_model(name: str) -> Model:
    from harness import models
    from harness.workloads import WORKLOADS

    workload = WORKLOADS[name]()
    params = models.count_params(workload.make_model(nnx.Rngs(0)))
    return Model(
        name=name,
        description=f"{workload.description}; {params:,} params, "
        f"batch {workload.batch_size}",
        make_model=workload.make_model,
        loss=workload.loss,
        sample=workload.sample,
        train=workload.train,
        has_convolutions=name.endswith("cnn"),
    )


def training_step(
    graphdef: nnx.GraphDef, model: Model, opt: optax.GradientTransformation
) -> Step:
    """Forward, backward and update; the batch drawn from the step's index."""

    def loss_of_params(params: Any, batch: Any) -> jax.Array:
        return model.loss(nnx.merge(graphdef, params), batch)

    def step(carry: Any, i: jax.Array, train: Any) -> Any:
        params, state = carry
        batch = model.sample(jax.random.fold_in(jax.random.key(0), i), train)
        grads = jax.grad(loss_of_params)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def time_whole_step(
    model: Model,
    opts: dict[str, optax.GradientTransformation],
    in_loop: bool,
    args: argparse.Namespace,
    unroll: int = 1,
) -> list[dict[str, Any]]:
    graphdef, params = nnx.split(model.make_model(nnx.Rngs(0)), nnx.Param)
    contenders = {}
    for name, opt in opts.items():
        carry = (jax.tree.map(jnp.copy, params), opt.init(params))
        step = training_step(graphdef, model, opt)
        sample = compile_sample(step, carry, model.train, in_loop, unroll)
        contenders[name] = Contender(sample, carry, model.train)
    k = time_interleaved(
        contenders, args.step_repeats, args.step_sample_ms / 1e3, unroll
    )
    size = sum(leaf.size for leaf in jax.tree.leaves(params))
    return [
        {
            "section": "whole step",
            "case": f"{model.name} ({how_sampled(in_loop, unroll)})",
            "layout": f"{len(jax.tree.leaves(params))} leaves",
            "dtype": "float32",
            "size": size,
            "optimizer": name,
            **timed(contenders, name),
            "steps_per_sample": k,
            "samples": args.step_repeats,
            "description": model.description,
        }
        for name in opts
    ]


def how_sampled(in_loop: bool, unroll: int) -> str:
    if in_loop:
        return "k steps in one compiled loop"
    if unroll > 1:
        return f"k steps, {unroll} written out per compiled call"
    return "k calls of the step"


DISPATCH_CONTROL = "adam + inert AAdam-sized state"


def inert_acceleration_state() -> optax.GradientTransformation:
    """Passes updates through and keeps a `prev_update` and an int8 sign per
    leaf that it never changes: AAdam's extra state leaves without its work."""

    def init(params: Any) -> tuple[Any, Any]:
        return (
            optax.tree.zeros_like(params),
            optax.tree.zeros_like(params, dtype=jnp.int8),
        )

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        return updates, state

    return optax.GradientTransformation(init, update)


def dispatch_control() -> optax.GradientTransformation:
    """Adam chained with AAdam's extra state leaves, left untouched."""
    return optax.chain(optax.adam(LEARNING_RATE), inert_acceleration_state())


def dispatch_rows(
    opts: dict[str, optax.GradientTransformation],
    args: argparse.Namespace,
    leaf_size: int = 1000,
) -> list[dict[str, Any]]:
    """The host's cost per call of a jitted update on many small leaves.

    The same isolated update timed as one call per step (each waited for) and
    as steps inside one compiled loop, interleaved; the difference per step is
    what the host adds: flattening the state, checking and handing over the
    arguments and results. A control, Adam chained with AAdam's extra state
    leaves left untouched, tells the cost of the leaves from the cost of the
    package's code.
    """
    opts = {**opts, DISPATCH_CONTROL: dispatch_control()}
    host_params = {
        f"leaf_{i:03d}": np.ones((leaf_size,), np.float32) for i in range(args.leaves)
    }
    grads = jax.device_put(host_params)
    contenders = dispatch_contenders(opts, host_params, grads)
    k = time_interleaved(contenders, args.repeats, args.sample_ms / 1e3)
    case = {
        "section": "dispatch",
        "case": f"{args.leaves} leaves of {leaf_size} params",
        "layout": "many",
        "dtype": "float32",
        "size": args.leaves * leaf_size,
    }
    return [
        {
            **case,
            "optimizer": name,
            **dispatch_timing_columns(contenders, name),
            "steps_per_sample": k,
            "samples": args.repeats,
            "state_leaves": len(jax.tree.leaves(opt.init(grads))),
        }
        for name, opt in opts.items()
    ]


def dispatch_contenders(
    opts: dict[str, optax.GradientTransformation], host_params: Any, grads: Any
) -> dict[tuple[str, bool], Contender]:
    """Each optimizer's update compiled twice, keyed `(name, in_loop)`: one
    call per step, and steps inside one compiled loop."""
    contenders = {}
    for name, opt in opts.items():
        for in_loop in (False, True):
            carry = (jax.device_put(host_params), opt.init(grads))
            sample = compile_sample(update_step(opt), carry, grads, in_loop)
            contenders[name, in_loop] = Contender(sample, carry, grads)
    return contenders


def dispatch_timing_columns(
    contenders: dict[tuple[str, bool], Contender], name: str
) -> dict[str, float]:
    """The host's time per call of `name` (per-call time less in-loop time,
    round by round) against adam's, and the two medians it comes from."""

    def host_seconds(optimizer: str) -> np.ndarray:
        per_call = np.asarray(contenders[optimizer, False].seconds)
        return per_call - np.asarray(contenders[optimizer, True].seconds)

    return {
        **timing_columns(*per_round(host_seconds(name), host_seconds("adam"))),
        "per_call_ms": 1e3 * quartiles(contenders[name, False].seconds).median,
        "in_loop_ms": 1e3 * quartiles(contenders[name, True].seconds).median,
    }


def fusion_rows(args: argparse.Namespace, size: int) -> list[dict[str, Any]]:
    """The one-leaf isolated update of adam and aadam in fresh processes,
    without and with XLA:CPU's multi-output fusion (XLA reads its flags once,
    at start)."""
    options = [
        "--only-isolated",
        f"--sizes={size}",
        "--layouts=one",
        "--dtypes=float32",
        f"--optimizers=adam,{AADAM}",
        f"--repeats={args.repeats}",
        f"--sample-ms={args.sample_ms}",
        f"--leaves={args.leaves}",
        f"--backend={args.backend}",
    ]
    rows = []
    for flags in ("", MULTI_OUTPUT_FUSION):
        # Added to whatever XLA_FLAGS the user runs with.
        user_flags = os.environ.get("XLA_FLAGS", "")
        env = {**os.environ, "XLA_FLAGS": f"{user_flags} {flags}".strip()}
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, __file__, *options, f"--out={out}"]
            subprocess.run(command, check=True, env=env, capture_output=True)
            rows += [
                {
                    **row,
                    "section": "multi-output fusion",
                    "xla_flags": flags or "(none)",
                }
                for row in records.read_csv(pathlib.Path(out) / "speed.csv")
            ]
    return rows


def compilations_over_steps(steps: int = 5) -> dict[str, int]:
    """How often each optimizer's jitted step compiles over `steps` steps."""
    host_params = make_params(1000, "one", np.float32, 1)
    params = jax.device_put(host_params)
    counts = {}
    for name, opt in optimizers().items():

        def step(params: Any, state: Any, grads: Any) -> Any:
            updates, state = opt.update(grads, state, params)  # noqa: B023
            return optax.apply_updates(params, updates), state

        jitted = jax.jit(step, donate_argnums=(0, 1))
        state, own_params = opt.init(params), jax.device_put(host_params)
        for _ in range(steps):
            own_params, state = jitted(own_params, state, params)
        counts[name] = jitted._cache_size()
    return counts


def state_bytes(size: int) -> dict[str, float]:
    """State bytes per parameter of each of `state_options()`."""
    params = {"w": jax.device_put(np.ones((size,), np.float32))}
    return {
        name: tree_bytes(opt.init(params)) / size
        for name, opt in state_options().items()
    }


def code_facts(size: int) -> dict[str, Any]:
    """What the report states beside the timings: properties of the code."""
    return {
        "state_bytes_per_param": state_bytes(size),
        "compilations": compilations_over_steps(),
    }


def _sizes(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",")]


def _case_options(parser: argparse.ArgumentParser) -> None:
    """What is timed: sizes, layouts, dtypes, optimizers and models."""
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="isolated update: parameter counts (default by backend)",
    )
    parser.add_argument("--layouts", default="one,many")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--leaves", type=int, default=200, help="leaves in 'many'")
    parser.add_argument(
        "--many-sizes",
        type=_sizes,
        help="sizes for the many-leaf layout (default: the largest size), timed "
        "in the first of --dtypes and for --step-optimizers only, since "
        "compiling 200 leaves is slow",
    )
    parser.add_argument(
        "--optimizers",
        default=",".join(optimizers()),
        help="comma-separated subset to time (adam is always included)",
    )
    parser.add_argument(
        "--step-optimizers",
        help="optimizers of the whole-step and many-leaf measurements (adam "
        f"first; default: those of {','.join(STEP_OPTIMIZERS)} among --optimizers)",
    )
    parser.add_argument(
        "--dispatch-optimizers",
        help=f"optimizers of the dispatch measurement (adam first; default: "
        f"adam,{AADAM}, or adam alone where --optimizers lacks {AADAM})",
    )
    parser.add_argument(
        "--models",
        default="digits_mlp,mnist_cnn,bytes_lm",
        help="whole-step models (empty for none)",
    )


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    """How long a sample takes and how many rounds are timed."""
    parser.add_argument("--repeats", type=int, default=9, help="rounds, at least 7")
    parser.add_argument(
        "--sample-ms", type=float, default=60.0, help="target time of one sample"
    )
    parser.add_argument(
        "--step-repeats",
        type=int,
        default=15,
        help="rounds of the whole-step cases, at least 7: a whole step varies "
        "more from round to round than the isolated update",
    )
    parser.add_argument(
        "--step-sample-ms",
        type=float,
        default=500.0,
        help="target time of one whole-step sample: a Transformer step takes "
        "tens of ms, and a sample of one or two steps is mostly noise",
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backend", choices=("auto", "cpu", "gpu"), default="auto")
    _case_options(parser)
    _sampling_options(parser)
    parser.add_argument(
        "--only-isolated",
        action="store_true",
        help="time the isolated update only (what the fusion comparison runs)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite speed.md and speed.png from speed.csv and speed_run.json in "
        "--out, measuring nothing",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
    _check(parser, args)
    return args


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses too few rounds and unknown optimizers; splits the lists."""
    for name in ("repeats", "step_repeats"):
        if getattr(args, name) < 7:
            option = "--" + name.replace("_", "-")
            parser.error(f"{option} must be at least 7 (the median of 7 rounds)")
    known = optimizers()
    chosen = ["adam"] + [
        n.strip() for n in args.optimizers.split(",") if n.strip() not in ("", "adam")
    ]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        parser.error(f"--optimizers: unknown {unknown}; choose from {list(known)}")
    _check_references(parser, "--optimizers", chosen)
    args.optimizers = chosen
    for option, default in (
        ("step_optimizers", STEP_OPTIMIZERS),
        ("dispatch_optimizers", ("adam", AADAM)),
    ):
        text = getattr(args, option)
        names = (
            [n for n in default if n in chosen]
            if text is None
            else [n.strip() for n in text.split(",") if n.strip()]
        )
        flag = "--" + option.replace("_", "-")
        if names[:1] != ["adam"] or any(n not in chosen for n in names):
            parser.error(
                f"{flag} must start with adam and be among --optimizers {chosen}"
            )
        _check_references(parser, flag, names)
        setattr(args, option, names)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]


def _check_references(
    parser: argparse.ArgumentParser, option: str, names: list[str]
) -> None:
    """A cautious optimizer is timed with the optimizer it masks, or its goal
    has no like-for-like ratio."""
    missing = [
        f"{name} needs {REFERENCES[name]}"
        for name in names
        if name in REFERENCES and REFERENCES[name] not in names
    ]
    if missing:
        parser.error(f"{option}: {'; '.join(missing)}")


def default_sizes(args: argparse.Namespace, backend: str) -> None:
    if args.sizes is None:
        if args.quick:
            args.sizes = [10_000, 100_000]
        elif backend == "cpu":
            args.sizes = [10_000, 100_000, 1_000_000, 10_000_000]
        else:
            args.sizes = [10_000, 1_000_000, 10_000_000, 100_000_000, 300_000_000]
    if args.quick:
        args.leaves = min(args.leaves, 20)
    if args.many_sizes is None:
        args.many_sizes = [max(args.sizes)]


# A job measures one case and returns its rows; the progress bar counts jobs.
Job = tuple[str, Callable[[], list[dict[str, Any]]]]


def whole_step_jobs(
    args: argparse.Namespace, opts: dict[str, optax.GradientTransformation]
) -> list[Job]:
    jobs: list[Job] = []
    for name in args.models:
        model = digits_mlp() if name == "digits_mlp" else workload_model(name)
        # XLA:CPU runs convolutions many times slower inside a loop body: there
        # a call runs UNROLLED_STEPS steps written out, which it does not slow.
        in_loop = not (model.has_convolutions and jax.default_backend() == "cpu")
        unroll = 1 if in_loop else UNROLLED_STEPS
        jobs.append(
            (name, partial(time_whole_step, model, opts, in_loop, args, unroll))
        )
        if name == "digits_mlp":
            # The dispatch-bound case: a small model, one call per step.
            per_call = partial(time_whole_step, model, opts, False, args)
            jobs.append((f"{name} per call", per_call))
    return jobs


def isolated_jobs(
    args: argparse.Namespace,
    opts: dict[str, optax.GradientTransformation],
    step_opts: dict[str, optax.GradientTransformation],
) -> list[Job]:
    dtypes = args.dtypes.split(",")
    cases = [Case("one", dtype, size) for dtype in dtypes for size in args.sizes]
    if "many" in args.layouts.split(","):
        # Compiling 200 leaves per optimizer is slow: the first dtype and the
        # --step-optimizers only.
        cases += [Case("many", dtypes[0], size) for size in args.many_sizes]
    return [
        (
            f"{c.layout} {c.dtype} {c.size:.0e}",
            partial(
                time_isolated_case,
                c,
                opts if c.layout == "one" else step_opts,
                args,
                # XLA compiles 200 leaves slowly: a second compile only to
                # read one step's HLO is spent on the one-leaf layout alone.
                c.size == max(args.sizes) and c.layout == "one",
            ),
        )
        for c in cases
    ]


def plan(args: argparse.Namespace) -> list[Job]:
    """Every measurement of the run, in order."""
    opts = {name: opt for name, opt in optimizers().items() if name in args.optimizers}
    step_opts = {name: opts[name] for name in args.step_optimizers}
    dispatch_opts = {name: opts[name] for name in args.dispatch_optimizers}
    if args.only_isolated:
        return isolated_jobs(args, opts, step_opts)
    jobs = whole_step_jobs(args, step_opts) + isolated_jobs(args, opts, step_opts)
    jobs.append(("dispatch", partial(dispatch_rows, dispatch_opts, args)))
    if jax.default_backend() == "cpu":
        jobs.append(("fusion", partial(fusion_rows, args, max(args.sizes))))
    return jobs


def measure(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Runs every job into speed.csv; returns the run's record."""
    jobs = plan(args)
    started = time.perf_counter()
    # Recorded before the first measurement: the code this process imported.
    recorded = {} if args.only_isolated else provenance.record(("tqdm",))
    rows: list[dict[str, Any]] = []
    progress = tqdm(jobs, desc="speed", unit="case", disable=args.only_isolated)
    for label, job in progress:
        progress.set_postfix_str(label)
        rows += job()
    facts = code_facts(max(args.sizes))
    args.out.mkdir(parents=True, exist_ok=True)
    records.write_csv(args.out / "speed.csv", rows)
    return {
        "command": command,
        "date": environment.now(),
        "wall_seconds": time.perf_counter() - started,
        "backend": jax.default_backend(),
        "machine": environment.machine(),
        "quick": args.quick,
        "provenance": recorded,
        "goals": speed_report.GOALS,
        **facts,
        "files": ["speed.csv", "speed.md", "speed.png", "speed_run.json"],
    }


def write_report(out: pathlib.Path) -> None:
    """speed.md and speed.png from the stored speed.csv and speed_run.json.

    A run JSON from before the code facts were stored lacks them: they are
    properties of the code (not timings), so they are computed again here.
    """
    run = records.read_json(out / "speed_run.json")
    if "compilations" not in run:
        run.update(code_facts(size=1000))
    speed_report.write(out, run)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.backend != "auto":
        jax.config.update(
            "jax_platforms", args.backend if args.backend != "gpu" else "cuda"
        )
    if args.report_only:
        write_report(args.out)
        return
    default_sizes(args, jax.default_backend())
    command = ("python benchmarks/speed.py " + " ".join(argv)).strip()
    run = measure(args, command)
    if args.only_isolated:
        return
    records.write_json(args.out / "speed_run.json", run)
    speed_report.write(args.out, run)
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
