"""Plot styles and figure helpers shared by the benchmark reports."""

from __future__ import annotations

import math
import pathlib
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
}


def style(name: str) -> dict[str, Any]:
    import matplotlib

    colors = matplotlib.colormaps["tab20"].colors
    return {
        "color": colors[_HUES[name]],
        "linestyle": "-" if name.startswith("aa") else "--",
        "linewidth": 2.0 if name == "aadam_sign_change" else 1.2,
    }


def panels(count: int, cols: int = 4) -> tuple[Any, np.ndarray]:
    """A figure with `count` axes in rows of `cols`; unused axes hidden."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows + 1.2))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes[count:]:
        ax.axis("off")
    return fig, axes[:count]


def save(fig: Any, path: pathlib.Path, title: str, legend_columns: int = 7) -> None:
    import matplotlib.pyplot as plt

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
    plt.close(fig)
