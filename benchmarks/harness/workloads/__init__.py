"""The workload registry: adding a workload is one small module and a line here.

Each entry builds a `Workload` from keyword arguments (`steps`, `eval_every`,
...), so a script can shrink every budget for a quick run.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.workload import Workload
from harness.workloads.bytes_lm import bytes_lm, bytes_lm_1m
from harness.workloads.mnist import mnist_cnn, mnist_logreg, mnist_mlp
from harness.workloads.small import (
    cancer_logreg,
    digits_cnn,
    digits_logreg,
    digits_mlp,
    quadratic_ill,
    quadratic_noisy,
    rosenbrock_2d,
    rosenbrock_100d,
)

# The small optimisation problems, whose metric is the training objective.
SMALL = (
    "digits_logreg",
    "cancer_logreg",
    "digits_mlp",
    "digits_cnn",
    "rosenbrock_2d",
    "rosenbrock_100d",
    "quadratic_ill",
    "quadratic_noisy",
)
WORKLOADS: dict[str, Callable[..., Workload]] = {
    "digits_logreg": digits_logreg,
    "cancer_logreg": cancer_logreg,
    "digits_mlp": digits_mlp,
    "digits_cnn": digits_cnn,
    "rosenbrock_2d": rosenbrock_2d,
    "rosenbrock_100d": rosenbrock_100d,
    "quadratic_ill": quadratic_ill,
    "quadratic_noisy": quadratic_noisy,
    "mnist_logreg": mnist_logreg,
    "mnist_mlp": mnist_mlp,
    "mnist_cnn": mnist_cnn,
    "bytes_lm": bytes_lm,
    "bytes_lm_1m": bytes_lm_1m,
}
