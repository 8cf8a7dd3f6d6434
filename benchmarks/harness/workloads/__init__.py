"""The workload registry: adding a workload is one small module and a line here.

Each entry builds a `Workload` from keyword arguments (`steps`, `eval_every`,
...), so a script can shrink every budget for a quick run.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.workload import Workload
from harness.workloads.bytes_lm import bytes_lm, bytes_lm_1m
from harness.workloads.mnist import mnist_cnn, mnist_logreg, mnist_mlp

WORKLOADS: dict[str, Callable[..., Workload]] = {
    "mnist_logreg": mnist_logreg,
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
    "bytes_lm": bytes_lm,
    "bytes_lm_1m": bytes_lm_1m,
}
