"""Speed and memory of one training step: the AAdam family against `optax.adam`.

Times a jitted, buffer-donating training step (`update` plus
`optax.apply_updates`) for each optimizer, interleaved in one run so that a
noisy machine slows all of them alike, and reports the median time as a ratio
to `optax.adam` from the same run. In the same run a plain XLA pass (a fused
`y + a * x`) measures the memory bandwidth, which turns each optimizer's
minimal traffic (read params, grads and state; write params and state) into a
floor time: `floor_fraction` is floor / measured, 1.0 at the bandwidth limit.

It also reads each step's compiled HLO (copies of large buffers, fusions,
XLA's own estimate of bytes accessed), checks that repeated steps never
recompile, and counts optimizer-state bytes per parameter.

    python benchmarks/speed.py                 # CPU defaults, about 5 minutes
    python benchmarks/speed.py --quick         # seconds, small sizes
    python benchmarks/speed.py --backend gpu   # on a CUDA machine, adds 1e8 and 3e8

Results go to --out: speed.csv, speed.md and speed.png.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import pathlib
import platform
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import aadam_optax

LEARNING_RATE = 1e-3
TARGET_RATIO = 1.40
TARGET_STATE_BYTES = 13.0
TARGET_LOW_PRECISION_STATE_BYTES = 9.0


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


def training_step(opt: optax.GradientTransformation) -> Callable:
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def bandwidth_probe(x: jax.Array, y: jax.Array) -> jax.Array:
    """A fused `y + a * x`: reads two arrays and writes one, nothing else."""
    return y + jnp.asarray(0.5, y.dtype) * x


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


@dataclasses.dataclass
class Case:
    layout: str
    dtype: str
    size: int


def time_case(
    case: Case, opts: dict[str, Any], repeats: int, leaves: int
) -> list[dict[str, Any]]:
    dtype = jnp.dtype(case.dtype)
    host_params = make_params(case.size, case.layout, dtype, leaves)
    params = jax.device_put(host_params)
    rng = np.random.default_rng(0)
    grads = jax.device_put(
        jax.tree.map(
            lambda p: rng.standard_normal(p.shape, np.float32).astype(p.dtype),
            host_params,
        )
    )
    running: dict[str, list[Any]] = {}
    facts: dict[str, dict[str, float]] = {}
    for name, opt in opts.items():
        state = jax.jit(opt.init)(params)
        # Compiled once, ahead of time: the executable honours the donation, and
        # the HLO read below is the one that is timed.
        step = training_step(opt).lower(params, state, grads).compile()
        facts[name] = hlo_facts(step)
        facts[name]["min_bytes"] = (
            2 * tree_bytes(params) + tree_bytes(grads) + 2 * tree_bytes(state)
        )
        own_params = jax.device_put(host_params)
        own_params, state = step(own_params, state, grads)  # warm up
        jax.block_until_ready(own_params)
        running[name] = [step, own_params, state, []]

    probe = jax.jit(bandwidth_probe, donate_argnums=(1,))
    x = jax.device_put(np.ones((case.size,), dtype))
    y = probe(x, jax.device_put(np.zeros((case.size,), dtype)))
    probe_times = []
    for _ in range(repeats):
        for name in opts:
            step, own_params, state, times = running[name]
            start = time.perf_counter()
            own_params, state = step(own_params, state, grads)
            jax.block_until_ready(own_params)
            times.append(time.perf_counter() - start)
            running[name][1:3] = own_params, state
        start = time.perf_counter()
        y = probe(x, y)
        jax.block_until_ready(y)
        probe_times.append(time.perf_counter() - start)

    probe_seconds = float(np.median(probe_times))
    bandwidth = 3 * x.nbytes / probe_seconds  # bytes per second
    adam_seconds = float(np.median(running["adam"][3]))
    rows = []
    for name in opts:
        times = running[name][3]
        seconds = float(np.median(times))
        floor_seconds = facts[name]["min_bytes"] / bandwidth
        rows.append(
            {
                "backend": jax.default_backend(),
                "layout": case.layout,
                "dtype": case.dtype,
                "size": case.size,
                "optimizer": name,
                "median_ms": 1e3 * seconds,
                "ratio_to_adam": seconds / adam_seconds,
                "min_bytes_per_param": facts[name]["min_bytes"] / case.size,
                "xla_bytes_per_param": facts[name]["xla_bytes_accessed"] / case.size,
                "floor_fraction": floor_seconds / seconds,
                "probe_gb_per_s": bandwidth / 1e9,
                "large_copies": facts[name]["large_copies"],
                "fusions": facts[name]["fusions"],
                "repeats": repeats,
            }
        )
    return rows


def compilations_over_steps(steps: int = 5) -> dict[str, int]:
    """How often each optimizer's jitted step compiles over `steps` steps."""
    host_params = make_params(1000, "one", np.float32, 1)
    params = jax.device_put(host_params)
    counts = {}
    for name, opt in optimizers().items():
        step, state = training_step(opt), opt.init(params)
        own_params = jax.device_put(host_params)
        for _ in range(steps):
            own_params, state = step(own_params, state, params)
        counts[name] = step._cache_size()
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


def write_markdown(
    path: pathlib.Path,
    rows: list[dict[str, Any]],
    state_rows: list[dict[str, Any]],
    compilations: dict[str, int],
    command: str,
    elapsed: float,
) -> None:
    largest = max(row["size"] for row in rows)
    lines = [
        "# Speed and memory: the AAdam family against optax.adam",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; backend: "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}); "
        f"{platform.processor() or platform.machine()}; wall time {elapsed:.0f} s.  ",
        f"Versions: jax {jax.__version__}, optax {optax.__version__}, "
        f"aadam_optax {aadam_optax.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}.",
        "",
        "Each cell: median over the repeats of one jitted, donating training step "
        "(update + apply_updates), run interleaved with optax.adam; `ratio` is "
        "time / adam's time in the same run. `floor` is the fraction of the "
        "bandwidth floor reached: minimal bytes (read params, grads and state; "
        "write params and state) over the bandwidth a fused `y + a*x` measured "
        "in the same run.",
        "",
        f"## Largest size ({largest:.0e} params)",
        "",
        "| layout | dtype | optimizer | ms | ratio to adam | min B/param "
        "| XLA B/param | floor | large copies | fusions |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["size"] != largest:
            continue
        lines.append(
            f"| {row['layout']} | {row['dtype']} | {row['optimizer']} "
            f"| {row['median_ms']:.2f} | {row['ratio_to_adam']:.2f} "
            f"| {row['min_bytes_per_param']:.1f} | {row['xla_bytes_per_param']:.1f} "
            f"| {row['floor_fraction']:.2f} | {row['large_copies']} "
            f"| {row['fusions']} |"
        )
    lines += ["", "## Target checks", ""]
    for layout in ("one", "many"):
        for row in rows:
            if (
                row["size"] == largest
                and row["layout"] == layout
                and row["dtype"] == "float32"
                and row["optimizer"] == "aadam[sign_change]"
            ):
                verdict = "met" if row["ratio_to_adam"] <= TARGET_RATIO else "NOT met"
                lines.append(
                    f"- AAdam step / Adam step, {layout} leaf layout, float32, "
                    f"{largest:.0e} params: {row['ratio_to_adam']:.2f} "
                    f"(target <= {TARGET_RATIO}: {verdict})."
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
    lines += [
        "",
        "## All sizes: ratio to adam",
        "",
        "| layout | dtype | size | "
        + " | ".join(sorted({r["optimizer"] for r in rows}))
        + " |",
        "|---|---|---:|" + "---:|" * len({r["optimizer"] for r in rows}),
    ]
    names = sorted({r["optimizer"] for r in rows})
    keys = sorted({(r["layout"], r["dtype"], r["size"]) for r in rows})
    for layout, dtype, size in keys:
        cells = {
            r["optimizer"]: r["ratio_to_adam"]
            for r in rows
            if (r["layout"], r["dtype"], r["size"]) == (layout, dtype, size)
        }
        lines.append(
            f"| {layout} | {dtype} | {size:.0e} | "
            + " | ".join(f"{cells[n]:.2f}" for n in names)
            + " |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["layout"], r["dtype"]) for r in rows})
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False, sharey=True
    )
    for ax, (layout, dtype) in zip(axes[0], panels, strict=True):
        for name in sorted({r["optimizer"] for r in rows}):
            points = sorted(
                (r["size"], r["ratio_to_adam"])
                for r in rows
                if (r["layout"], r["dtype"], r["optimizer"]) == (layout, dtype, name)
            )
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
        ax.axhline(TARGET_RATIO, color="k", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{layout} leaf layout, {dtype}")
        ax.set_xlabel("parameters")
    axes[0][0].set_ylabel("step time / optax.adam step time")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(float(v)) for v in s.split(",")],
        help="comma-separated parameter counts (default by backend)",
    )
    parser.add_argument("--layouts", default="one,many")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--leaves", type=int, default=200, help="leaves in 'many'")
    parser.add_argument(
        "--many-sizes",
        type=lambda s: [int(float(v)) for v in s.split(",")],
        help="sizes for the many-leaf layout (default: the two largest sizes, "
        "since compiling 200 leaves per optimizer is slow)",
    )
    parser.add_argument("--repeats", type=int, default=9, help="at least 7")
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
    if args.repeats < 7:
        parser.error("--repeats must be at least 7 (the median of at least 7 runs)")
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
        args.many_sizes = sorted(args.sizes)[-2:]
    cases = [
        Case(layout, dtype, size)
        for layout in args.layouts.split(",")
        for dtype in args.dtypes.split(",")
        for size in (args.many_sizes if layout == "many" else args.sizes)
    ]
    opts = optimizers()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases, desc="speed", unit="case"):
        rows += time_case(case, opts, args.repeats, args.leaves)
    state_rows = state_bytes_table(max(args.sizes))
    compilations = compilations_over_steps()
    elapsed = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "speed.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    command = "python benchmarks/speed.py " + " ".join(argv)
    write_markdown(
        args.out / "speed.md", rows, state_rows, compilations, command.strip(), elapsed
    )
    plot(args.out / "speed.png", rows)
    print((args.out / "speed.md").read_text())


if __name__ == "__main__":
    main()
