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

A sample runs k steps inside one compiled loop (the same k for every optimizer
of a case, chosen so a sample takes about --sample-ms, or --step-sample-ms for
a whole training step), so it times the step,
not Python's call overhead. The exception is a convolutional model on CPU:
XLA:CPU runs convolutions many times slower inside a loop body
(jax-ml/jax#12868), so there a sample is back-to-back calls of a compiled
function that runs 8 steps written out, and one block at the end.

    python benchmarks/speed.py                 # CPU defaults, about 3 minutes
    python benchmarks/speed.py --quick         # seconds, small sizes
    python benchmarks/speed.py --backend gpu   # on a CUDA machine, adds 1e8 and 3e8

Results go to --out: speed.csv, speed.md, speed.png and speed_run.json (the
command, wall time and provenance: commit, versions, numerics fingerprint).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import platform
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
from harness import provenance
from tqdm import tqdm

import aadam_optax

LEARNING_RATE = 1e-3
# The project's goals, checked against what this run measures.
ISOLATED_UPDATE_GOAL = 1.40  # AAdam's isolated update / Adam's, at the largest size
WHOLE_STEP_GOAL = 1.03  # AAdam's whole training step / Adam's (Transformer, CNN)
STATE_BYTES_GOAL = 13.0
LOW_PRECISION_STATE_BYTES_GOAL = 9.0
MULTI_OUTPUT_FUSION = "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion=true"
AADAM = "aadam[sign_change]"
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
    }


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


# A step is `step(carry, i, constants) -> carry`: `i` is the step's index in
# the sample (so that no work is the same in two steps and nothing can be
# hoisted out of the loop), `constants` the arrays every step reads.
Step = Callable[[Any, jax.Array, Any], Any]


def compile_sample(
    step: Step, carry: Any, constants: Any, in_loop: bool, unroll: int = 1
) -> Callable:
    """`sample(carry, constants, k) -> carry`: k steps, the carry donated.

    In a loop, one call runs all k; otherwise each call runs `unroll` steps
    written out one after another (k must then be a multiple of `unroll`).
    """
    if in_loop:

        def k_steps(carry: Any, constants: Any, k: jax.Array) -> Any:
            return jax.lax.fori_loop(
                0, k, lambda i, carry: step(carry, i, constants), carry
            )

        looped = jax.jit(k_steps, donate_argnums=0)
        looped = looped.lower(carry, constants, np.int32(1)).compile()
        return lambda carry, constants, k: looped(carry, constants, np.int32(k))

    def steps(carry: Any, first: jax.Array, constants: Any) -> Any:
        for offset in range(unroll):
            carry = step(carry, first + offset, constants)
        return carry

    call = jax.jit(steps, donate_argnums=0)
    call = call.lower(carry, np.int32(0), constants).compile()

    def k_calls(carry: Any, constants: Any, k: int) -> Any:
        for first in range(0, k, unroll):
            carry = call(carry, np.int32(first), constants)
        return carry

    return k_calls


@dataclasses.dataclass
class Contender:
    """One thing timed in a round: its compiled sample, carry and times."""

    sample: Callable
    carry: Any
    constants: Any
    seconds: list[float] = dataclasses.field(default_factory=list)

    def run(self, k: int) -> float:
        start = time.perf_counter()
        self.carry = self.sample(self.carry, self.constants, k)
        jax.block_until_ready(self.carry)
        return time.perf_counter() - start


def steps_per_sample(
    contender: Contender, sample_seconds: float, multiple: int = 1
) -> int:
    """Enough steps, a multiple of `multiple`, that one sample takes about
    `sample_seconds`.

    Estimated twice: a single step's time includes the call's fixed cost, so
    the first estimate of k is refined by timing k steps.
    """
    k = multiple
    contender.run(k)  # the first run of an executable pays one-off costs
    for _ in range(2):
        seconds_per_step = contender.run(k) / k
        k = int(min(10_000, max(1, sample_seconds / max(seconds_per_step, 1e-7))))
        k = multiple * -(-k // multiple)
    return k


def time_interleaved(
    contenders: dict[str, Contender],
    rounds: int,
    sample_seconds: float,
    multiple: int = 1,
) -> int:
    """Fills each contender's `seconds` with `rounds` samples of k steps; returns k."""
    k = steps_per_sample(next(iter(contenders.values())), sample_seconds, multiple)
    for contender in contenders.values():
        contender.run(k)  # warm up at the timed k
    names = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            contenders[name].seconds.append(contenders[name].run(k) / k)
    return k


def quartiles(values: Any) -> tuple[float, float, float]:
    q25, median, q75 = np.percentile(np.asarray(values), [25, 50, 75])
    return float(median), float(q25), float(q75)


def timing_columns(
    contenders: dict[str, Contender], name: str, reference: str
) -> dict[str, float]:
    """Median and IQR of the step time, and of the per-round ratio to `reference`."""
    seconds = np.asarray(contenders[name].seconds)
    ratios = seconds / np.asarray(contenders[reference].seconds)
    ms, ms_q25, ms_q75 = quartiles(1e3 * seconds)
    ratio, ratio_q25, ratio_q75 = quartiles(ratios)
    return {
        "median_ms": ms,
        "q25_ms": ms_q25,
        "q75_ms": ms_q75,
        "ratio_to_adam": ratio,
        "ratio_q25": ratio_q25,
        "ratio_q75": ratio_q75,
    }


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


def time_isolated_case(
    case: Case,
    opts: dict[str, optax.GradientTransformation],
    args: argparse.Namespace,
    read_hlo: bool,
) -> list[dict[str, Any]]:
    dtype = jnp.dtype(case.dtype)
    host_params = make_params(case.size, case.layout, dtype, args.leaves)
    params = jax.device_put(host_params)
    rng = np.random.default_rng(0)
    grads = jax.device_put(
        jax.tree.map(
            lambda p: rng.standard_normal(p.shape, np.float32).astype(p.dtype),
            host_params,
        )
    )
    contenders, facts = {}, {}
    for name, opt in opts.items():
        state = jax.jit(opt.init)(params)
        facts[name] = (
            single_step_facts(opt, params, state, grads)
            if read_hlo
            else dict.fromkeys(("large_copies", "fusions", "xla_bytes_accessed"), "")
        )
        facts[name]["min_bytes"] = (
            2 * tree_bytes(params) + tree_bytes(grads) + 2 * tree_bytes(state)
        )
        carry = (jax.device_put(host_params), state)
        contenders[name] = Contender(
            compile_sample(update_step(opt), carry, grads, in_loop=True), carry, grads
        )
    x = jax.device_put(np.ones((case.size,), dtype))
    y = jax.device_put(np.zeros((case.size,), dtype))
    contenders["probe"] = Contender(compile_sample(bandwidth_step, y, x, True), y, x)
    k = time_interleaved(contenders, args.repeats, args.sample_ms / 1e3)

    bandwidth = 3 * x.nbytes / float(np.median(contenders["probe"].seconds))
    rows = []
    for name in opts:
        timing = timing_columns(contenders, name, "adam")
        rows.append(
            {
                "section": "isolated update",
                "case": f"{case.layout} leaf layout, {case.dtype}",
                "layout": case.layout,
                "dtype": case.dtype,
                "size": case.size,
                "optimizer": name,
                **timing,
                "steps_per_sample": k,
                "samples": args.repeats,
                "min_bytes_per_param": facts[name]["min_bytes"] / case.size,
                "xla_bytes_per_param": facts[name]["xla_bytes_accessed"]
                and facts[name]["xla_bytes_accessed"] / case.size,
                "floor_fraction": facts[name]["min_bytes"]
                / bandwidth
                / (timing["median_ms"] / 1e3),
                "probe_gb_per_s": bandwidth / 1e9,
                "large_copies": facts[name]["large_copies"],
                "fusions": facts[name]["fusions"],
            }
        )
    return rows


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
    if in_loop:
        how = "k steps in one compiled loop"
    elif unroll > 1:
        how = f"k steps, {unroll} written out per compiled call"
    else:
        how = "k calls of the step"
    return [
        {
            "section": "whole step",
            "case": f"{model.name} ({how})",
            "layout": f"{len(jax.tree.leaves(params))} leaves",
            "dtype": "float32",
            "size": size,
            "optimizer": name,
            **timing_columns(contenders, name, "adam"),
            "steps_per_sample": k,
            "samples": args.step_repeats,
            "description": model.description,
        }
        for name in opts
    ]


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
    opts = {
        **opts,
        DISPATCH_CONTROL: optax.chain(
            optax.adam(LEARNING_RATE), inert_acceleration_state()
        ),
    }
    host_params = {
        f"leaf_{i:03d}": np.ones((leaf_size,), np.float32) for i in range(args.leaves)
    }
    grads = jax.device_put(host_params)
    contenders = {}
    for name, opt in opts.items():
        for in_loop in (False, True):
            carry = (jax.device_put(host_params), opt.init(grads))
            sample = compile_sample(update_step(opt), carry, grads, in_loop)
            contenders[name, in_loop] = Contender(sample, carry, grads)
    k = time_interleaved(contenders, args.repeats, args.sample_ms / 1e3)
    overhead = {
        name: np.asarray(contenders[name, False].seconds)
        - np.asarray(contenders[name, True].seconds)
        for name in opts
    }
    rows = []
    for name, opt in opts.items():
        us, us_q25, us_q75 = quartiles(1e6 * overhead[name])
        ratio, ratio_q25, ratio_q75 = quartiles(overhead[name] / overhead["adam"])
        rows.append(
            {
                "section": "dispatch",
                "case": f"{args.leaves} leaves of {leaf_size} params",
                "layout": "many",
                "dtype": "float32",
                "size": args.leaves * leaf_size,
                "optimizer": name,
                "median_ms": us / 1e3,
                "q25_ms": us_q25 / 1e3,
                "q75_ms": us_q75 / 1e3,
                "ratio_to_adam": ratio,
                "ratio_q25": ratio_q25,
                "ratio_q75": ratio_q75,
                "per_call_ms": 1e3 * float(np.median(contenders[name, False].seconds)),
                "in_loop_ms": 1e3 * float(np.median(contenders[name, True].seconds)),
                "steps_per_sample": k,
                "samples": args.repeats,
                "state_leaves": len(jax.tree.leaves(opt.init(grads))),
            }
        )
    return rows


def fusion_rows(args: argparse.Namespace, size: int) -> list[dict[str, Any]]:
    """The one-leaf isolated update of adam and aadam in fresh processes,
    without and with XLA:CPU's multi-output fusion (XLA reads its flags once,
    at start)."""
    rows = []
    for flags in ("", MULTI_OUTPUT_FUSION):
        with tempfile.TemporaryDirectory() as out:
            command = [
                sys.executable,
                __file__,
                "--only-isolated",
                f"--sizes={size}",
                "--layouts=one",
                "--dtypes=float32",
                f"--optimizers=adam,{AADAM}",
                f"--repeats={args.repeats}",
                f"--sample-ms={args.sample_ms}",
                f"--leaves={args.leaves}",
                f"--backend={args.backend}",
                f"--out={out}",
            ]
            # Added to whatever XLA_FLAGS the user runs with.
            user_flags = os.environ.get("XLA_FLAGS", "")
            env = {**os.environ, "XLA_FLAGS": f"{user_flags} {flags}".strip()}
            subprocess.run(command, check=True, env=env, capture_output=True)
            with open(pathlib.Path(out) / "speed.csv") as handle:
                for row in csv.DictReader(handle):
                    rows.append(
                        {
                            **row,
                            "section": "multi-output fusion",
                            "xla_flags": flags or "(none)",
                        }
                    )
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


def state_bytes_table(size: int) -> list[dict[str, Any]]:
    params = {"w": jax.device_put(np.ones((size,), np.float32))}
    return [
        {
            "optimizer": name,
            "state_bytes_per_param": tree_bytes(opt.init(params)) / size,
        }
        for name, opt in state_options().items()
    ]


def spread(row: dict[str, Any], key: str, digits: int) -> str:
    """`median [q25-q75]` of a timing column."""
    low, high = (
        ("q25_ms", "q75_ms") if key == "median_ms" else ("ratio_q25", "ratio_q75")
    )
    return (
        f"{float(row[key]):.{digits}f} "
        f"[{float(row[low]):.{digits}f}-{float(row[high]):.{digits}f}]"
    )


def hlo_cell(value: Any) -> str:
    """An HLO fact, or "-" where the case's HLO was not read."""
    if value == "":
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def goal_line(what: str, ratio: float, goal: float) -> str:
    verdict = "met" if ratio <= goal else "NOT met"
    # Three decimals where two would round a miss onto the goal.
    digits = 2 if verdict == "met" or round(ratio, 2) > goal else 3
    return f"- {what}: {ratio:.{digits}f} (goal <= {goal:.2f}: {verdict})."


def pick(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(str(r.get(k)) == str(v) for k, v in match.items())]


def write_markdown(
    path: pathlib.Path,
    rows: list[dict[str, Any]],
    state_rows: list[dict[str, Any]],
    compilations: dict[str, int],
    command: str,
    elapsed: float,
    recorded: dict[str, Any],
) -> None:
    isolated = pick(rows, section="isolated update")
    whole = pick(rows, section="whole step")
    fusion = pick(rows, section="multi-output fusion")
    dispatch = pick(rows, section="dispatch")
    lines = [
        "# Speed and memory: the AAdam family against optax.adam",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; backend: "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"wall time {elapsed:.0f} s.",
        "",
        *provenance.markdown_lines(recorded),
        "",
        "Every optimizer of a case runs once per round, in a rotating order, and "
        "a sample is k steps inside one compiled loop (the same k for all, "
        "`k` column), so the time is the step's, not Python's. Cells are the "
        "median over the rounds with the interquartile range in brackets; a "
        "ratio is taken within each round (time / adam's time), then its median "
        "and IQR. Absolute times on a shared machine vary from run to run; the "
        "interleaved ratios are what to compare.",
        "",
        "## Goals",
        "",
    ]
    for row in pick(whole, optimizer=AADAM):
        if "cnn" in row["case"] or "bytes_lm" in row["case"]:
            lines.append(
                goal_line(
                    f"AAdam whole step / Adam's, {row['case']}",
                    row["ratio_to_adam"],
                    WHOLE_STEP_GOAL,
                )
            )
    if isolated:
        largest = max(r["size"] for r in isolated)
        for row in pick(isolated, size=largest, dtype="float32", optimizer=AADAM):
            lines.append(
                goal_line(
                    f"AAdam isolated update / Adam's, {row['case']}, {largest:.0e} "
                    "params",
                    row["ratio_to_adam"],
                    ISOLATED_UPDATE_GOAL,
                )
            )
        for row in pick(isolated, size=largest, optimizer=AADAM):
            adam = pick(isolated, case=row["case"], size=largest, optimizer="adam")
            if row["xla_bytes_per_param"] and adam[0]["xla_bytes_per_param"]:
                lines.append(
                    f"- XLA's bytes accessed, AAdam / Adam, {row['case']}: "
                    f"{row['xla_bytes_per_param'] / adam[0]['xla_bytes_per_param']:.2f}"
                    " (the floor of this backend's fusions, see below)."
                )
    for row in pick(fusion, optimizer=AADAM):
        adam = pick(fusion, optimizer="adam", xla_flags=row["xla_flags"])[0]
        # A ratio can improve because Adam got slower: give both times.
        lines.append(
            goal_line(
                f"Same, fresh process, {row['layout']} leaf layout, XLA_FLAGS "
                f"{row['xla_flags']} (AAdam {float(row['median_ms']):.1f} ms, "
                f"Adam {float(adam['median_ms']):.1f} ms)",
                float(row["ratio_to_adam"]),
                ISOLATED_UPDATE_GOAL,
            )
        )
    recompiled = sorted(name for name, count in compilations.items() if count != 1)
    lines.append(
        "- Compilations of each jitted step over 5 steps: "
        + (
            "1 for every optimizer."
            if not recompiled
            else f"more than 1 for {recompiled}."
        )
    )
    for row in state_rows:
        lines.append(
            f"- State bytes per parameter, {row['optimizer']}: "
            f"{row['state_bytes_per_param']:.2f}"
        )

    if whole:
        lines += [
            "",
            "## Whole training step (forward, backward, update)",
            "",
            "| case | params | optimizer | ms per step | ratio to adam | k |",
            "|---|---:|---|---:|---:|---:|",
        ]
        lines += [
            f"| {r['case']} | {r['size']:,} | {r['optimizer']} "
            f"| {spread(r, 'median_ms', 3)} | {spread(r, 'ratio_to_adam', 2)} "
            f"| {r['steps_per_sample']} |"
            for r in whole
        ]
        lines += [""] + sorted(
            {f"- {r['case'].split(' ')[0]}: {r['description']}." for r in whole}
        )
    if isolated:
        lines += [
            "",
            f"## Isolated update (update + apply_updates), {largest:.0e} params",
            "",
            "`floor` is the fraction of the bandwidth floor reached: minimal bytes "
            "(read params, grads and state; write params and state) over the "
            "bandwidth a fused `y + a*x` reached in the same rounds. `XLA B/param` "
            "is XLA's own estimate for one step.",
            "",
            "Without multi-output fusion (XLA:CPU's default) every array a step "
            "writes is its own kernel, which reads all it needs: Adam writes 3 "
            "arrays per leaf (mu, nu, params), AAdam 5 (mu, nu, prev_update, the "
            "sign, params). Per float32 parameter that is mu 12 B, nu 12 B and "
            "params 16 B for Adam (40 B), and mu 12, nu 12, prev_update 21 "
            "(g, mu, nu, prev_update, sign in; prev_update out), sign 5 and "
            "params 12 B for AAdam (62 B): 1.55 times Adam's, above the 1.36 of "
            "the minimal traffic (`min B/param`). The same count of kernels sets "
            "the fixed cost per leaf that dominates small models.",
            "",
            "| case | optimizer | ms | ratio to adam | min B/param | XLA B/param "
            "| floor | large copies | fusions |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['case']} | {r['optimizer']} | {spread(r, 'median_ms', 2)} "
            f"| {spread(r, 'ratio_to_adam', 2)} | {r['min_bytes_per_param']:.1f} "
            f"| {hlo_cell(r['xla_bytes_per_param'])} | {r['floor_fraction']:.2f} "
            f"| {hlo_cell(r['large_copies'])} | {hlo_cell(r['fusions'])} |"
            for r in pick(isolated, size=largest)
        ]
        names = list(dict.fromkeys(r["optimizer"] for r in isolated))
        lines += [
            "",
            "### All sizes: median ratio to adam",
            "",
            "| case | size | " + " | ".join(names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for case, size in dict.fromkeys((r["case"], r["size"]) for r in isolated):
            cells = {r["optimizer"]: r for r in pick(isolated, case=case, size=size)}
            lines.append(
                f"| {case} | {size:.0e} | "
                + " | ".join(
                    f"{cells[n]['ratio_to_adam']:.2f}" if n in cells else "-"
                    for n in names
                )
                + " |"
            )
    if fusion:
        lines += [
            "",
            "## XLA:CPU multi-output fusion",
            "",
            f"The isolated update in two fresh processes, XLA_FLAGS unset and "
            f"`XLA_FLAGS={MULTI_OUTPUT_FUSION}`.",
            "",
            "| XLA_FLAGS | case | optimizer | ms | ratio to adam | XLA B/param "
            "| fusions |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['xla_flags']} | {r['case']} | {r['optimizer']} "
            f"| {spread(r, 'median_ms', 2)} | {spread(r, 'ratio_to_adam', 2)} "
            f"| {float(r['xla_bytes_per_param']):.1f} | {r['fusions']} |"
            for r in fusion
        ]
    if dispatch:
        lines += [
            "",
            "## Dispatch: what the host adds to one jitted update call",
            "",
            "The isolated update timed as one call per step and as steps in one "
            "compiled loop, interleaved; host cost = per-call time - in-loop time "
            "(microseconds, median [IQR] over the rounds).",
            "",
            "| case | optimizer | state leaves | per call us | in loop us "
            "| host us | host ratio to adam |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['case']} | {r['optimizer']} | {r['state_leaves']} "
            f"| {1e3 * r['per_call_ms']:.0f} | {1e3 * r['in_loop_ms']:.0f} "
            f"| {1e3 * r['median_ms']:.0f} [{1e3 * r['q25_ms']:.0f}-"
            f"{1e3 * r['q75_ms']:.0f}] | {spread(r, 'ratio_to_adam', 2)} |"
            for r in dispatch
        ]
    path.write_text("\n".join(lines) + "\n")


def plot(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    """Ratio to adam (median and IQR): the isolated update by size, and the
    whole step by model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    isolated = pick(rows, section="isolated update")
    whole = pick(rows, section="whole step")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for case in dict.fromkeys(r["case"] for r in isolated):
        points = pick(isolated, case=case, optimizer=AADAM)
        if len({r["size"] for r in points}) > 1:
            sizes = [r["size"] for r in points]
            left.plot(
                sizes, [r["ratio_to_adam"] for r in points], marker="o", label=case
            )
            left.fill_between(
                sizes,
                [r["ratio_q25"] for r in points],
                [r["ratio_q75"] for r in points],
                alpha=0.2,
            )
    left.axhline(ISOLATED_UPDATE_GOAL, color="k", linestyle="--", linewidth=0.8)
    left.set_xscale("log")
    left.set_xlabel("parameters")
    left.set_ylabel("AAdam time / optax.adam time")
    left.set_title("isolated update (median, IQR band)")
    if isolated:
        left.legend(fontsize=7)
    cases = list(dict.fromkeys(r["case"] for r in whole))
    names = list(dict.fromkeys(r["optimizer"] for r in whole))
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        cells = [pick(whole, case=c, optimizer=name)[0] for c in cases]
        medians = np.array([r["ratio_to_adam"] for r in cells])
        errors = [
            medians - [r["ratio_q25"] for r in cells],
            [r["ratio_q75"] for r in cells] - medians,
        ]
        right.bar(
            np.arange(len(cases)) + j * width, medians, width, yerr=errors, label=name
        )
    right.axhline(WHOLE_STEP_GOAL, color="k", linestyle="--", linewidth=0.8)
    labels = [case.replace(" (", "\n(") for case in cases]
    right.set_xticks(np.arange(len(cases)) + 0.4 - width / 2, labels, fontsize=7)
    right.set_ylabel("step time / optax.adam step time")
    right.set_title("whole training step (median, IQR)")
    if whole:
        right.set_ylim(0.8, max(1.3, max(r["ratio_q75"] for r in whole) + 0.05))
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str]) -> argparse.Namespace:
    sizes = lambda s: [int(float(v)) for v in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backend", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument(
        "--sizes",
        type=sizes,
        help="isolated update: parameter counts (default by backend)",
    )
    parser.add_argument("--layouts", default="one,many")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--leaves", type=int, default=200, help="leaves in 'many'")
    parser.add_argument(
        "--many-sizes",
        type=sizes,
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
        default=f"adam,{AADAM}",
        help="optimizers of the whole-step, many-leaf and dispatch measurements "
        "(adam first)",
    )
    parser.add_argument(
        "--models",
        default="digits_mlp,mnist_cnn,bytes_lm",
        help="whole-step models (empty for none)",
    )
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
    parser.add_argument(
        "--only-isolated",
        action="store_true",
        help="time the isolated update only (what the fusion comparison runs)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
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
    args.optimizers = chosen
    args.step_optimizers = [
        n.strip() for n in args.step_optimizers.split(",") if n.strip()
    ]
    if args.step_optimizers[:1] != ["adam"] or any(
        n not in chosen for n in args.step_optimizers
    ):
        parser.error(
            f"--step-optimizers must start with adam and be among --optimizers {chosen}"
        )
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.backend != "auto":
        jax.config.update(
            "jax_platforms", args.backend if args.backend != "gpu" else "cuda"
        )
    backend = jax.default_backend()
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
    opts = {name: opt for name, opt in optimizers().items() if name in args.optimizers}
    step_opts = {name: opts[name] for name in args.step_optimizers}
    dtypes = args.dtypes.split(",")
    largest = max(args.sizes)
    cases = [Case("one", dtype, size) for dtype in dtypes for size in args.sizes]
    if "many" in args.layouts.split(","):
        # Compiling 200 leaves per optimizer is slow: the first dtype and the
        # --step-optimizers only.
        cases += [Case("many", dtypes[0], size) for size in args.many_sizes]
    models = {
        name: digits_mlp() if name == "digits_mlp" else workload_model(name)
        for name in ([] if args.only_isolated else args.models)
    }
    # Each job returns rows; the progress bar counts jobs.
    jobs: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = []
    for model in models.values():
        # XLA:CPU runs convolutions many times slower inside a loop body: there
        # a call runs UNROLLED_STEPS steps written out, which it does not slow.
        in_loop = not (model.has_convolutions and backend == "cpu")
        unroll = 1 if in_loop else UNROLLED_STEPS
        jobs.append(
            (
                model.name,
                partial(time_whole_step, model, step_opts, in_loop, args, unroll),
            )
        )
        if model.name == "digits_mlp":
            # The dispatch-bound case: a small model, one call per step.
            jobs.append(
                (
                    f"{model.name} per call",
                    partial(time_whole_step, model, step_opts, False, args),
                )
            )
    jobs += [
        (
            f"{c.layout} {c.dtype} {c.size:.0e}",
            partial(
                time_isolated_case,
                c,
                opts if c.layout == "one" else step_opts,
                args,
                # XLA compiles 200 leaves slowly: a second compile only to
                # read one step's HLO is spent on the one-leaf layout alone.
                c.size == largest and c.layout == "one",
            ),
        )
        for c in cases
    ]
    if not args.only_isolated:
        jobs.append(("dispatch", partial(dispatch_rows, step_opts, args)))
        if backend == "cpu":
            jobs.append(("fusion", partial(fusion_rows, args, largest)))
    started = time.perf_counter()
    # Recorded before the first measurement: the code this process imported.
    recorded = {} if args.only_isolated else provenance.record(("tqdm",))
    rows: list[dict[str, Any]] = []
    progress = tqdm(jobs, desc="speed", unit="case", disable=args.only_isolated)
    for label, job in progress:
        progress.set_postfix_str(label)
        rows += job()
    state_rows = state_bytes_table(max(args.sizes))
    compilations = compilations_over_steps()
    elapsed = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(args.out / "speed.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    if args.only_isolated:
        return
    command = "python benchmarks/speed.py " + " ".join(argv)
    write_markdown(
        args.out / "speed.md",
        rows,
        state_rows,
        compilations,
        command.strip(),
        elapsed,
        recorded,
    )
    plot(args.out / "speed.png", rows)
    run = {
        "command": command.strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"
        ),
        "wall_seconds": elapsed,
        "backend": backend,
        "machine": f"{platform.platform()}, {os.cpu_count()} cores",
        "provenance": recorded,
        "files": ["speed.csv", "speed.md", "speed.png", "speed_run.json"],
    }
    (args.out / "speed_run.json").write_text(json.dumps(run, indent=1) + "\n")
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
