"""Plot styles and figure helpers shared by the benchmark reports."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Each accelerated optimizer shares its colour with the optimizer it
# accelerates: AAdam solid, the Optax optimizer dashed.
_HUES = {
    "aadam_sign_change": 0,
    "adam": 0,
    "aadamw": 2,
    "adamw": 2,
    "aadamax": 4,
    "adamax": 4,
    "aamsgrad": 6,
    "amsgrad": 6,
    "aadam_sign": 8,
    "aadam_magnitude": 10,
    "sgd_momentum": 14,
    "nadam": 16,
    "rmsprop_momentum": 18,
    # The sign-aware relatives of the study (never in one plot with
    # aadam_sign or rmsprop_momentum, which share their hues).
    "cautious_adamw": 12,
    "cautious_aadamw": 13,
    "lion": 8,
    "adopt": 18,
}


def style(name: str) -> dict[str, Any]:
    import matplotlib

    colors = matplotlib.colormaps["tab20"].colors
    return {
        "color": colors[_HUES[name]],
        # A cautious optimizer is drawn like the one whose direction it masks.
        "linestyle": "-" if name.removeprefix("cautious_").startswith("aa") else "--",
        "linewidth": 2.0 if name == "aadam_sign_change" else 1.2,
    }


def _pyplot() -> Any:
    """matplotlib.pyplot drawing to files (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(count: int, cols: int = 4) -> tuple[Any, np.ndarray]:
    """A figure with `count` axes in rows of `cols`; unused axes hidden."""
    plt = _pyplot()
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows + 1.2))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[count:]:
        ax.axis("off")
    return fig, axes[:count]


def save(fig: Any, path: pathlib.Path, title: str, legend_columns: int = 7) -> None:
    """Writes a `panels` figure under one legend, taken from its first axes."""
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=legend_columns,
        fontsize=9,
        frameon=False,
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)


def side_by_side(count: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
    """A figure of `size` inches with `count` axes in one row."""
    fig, axes = _pyplot().subplots(1, count, figsize=size)
    return fig, list(np.atleast_1d(axes))


def band(
    ax: Any,
    x: Sequence[float],
    middle: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    alpha: float = 0.12,
    **line: Any,
) -> None:
    """A line through `middle` over a shaded band from `low` to `high` in the
    line's colour (e.g. a median and its min-max or interquartile range)."""
    (drawn,) = ax.plot(x, middle, **line)
    ax.fill_between(x, low, high, facecolor=drawn.get_color(), alpha=alpha, linewidth=0)


def bars(
    ax: Any,
    groups: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
) -> None:
    """Bars side by side in each group, one per series, each with an error bar
    from its low to its high value; `series[name]` is (middle, low, high), a
    value per group."""
    width = 0.8 / max(1, len(series))
    for j, (name, (middle, low, high)) in enumerate(series.items()):
        mid = np.asarray(middle)
        errors = [mid - np.asarray(low), np.asarray(high) - mid]
        positions = np.arange(len(groups)) + j * width
        ax.bar(positions, mid, width, yerr=errors, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, fontsize=7)


def goal(ax: Any, value: float) -> None:
    """A dashed horizontal line at a goal."""
    ax.axhline(value, color="k", linestyle="--", linewidth=0.8)


def finish(fig: Any, path: pathlib.Path, dpi: int = 90) -> None:
    """Lays out, writes and closes a figure that has its own legends."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
