"""AAdam (Accelerated Adam) and its Adam-family relatives as Optax optimizers."""

from aadam_optax._aadam import ScaleByAAdamState, aadam, aadamw, scale_by_aadam
from aadam_optax._aadamax import ScaleByAAdaMaxState, aadamax, scale_by_aadamax
from aadam_optax._aamsgrad import ScaleByAAMSGradState, aamsgrad, scale_by_aamsgrad
from aadam_optax._acceleration import AccelerateState, accelerate
from aadam_optax._cautious import (
    cautious,
    cautious_aadamw,
    cautious_adamw,
    scale_by_cautious,
)
from aadam_optax._minimize import MinimizeInfo, minimize
from aadam_optax._sharding import state_shardings
from aadam_optax._validation import VARIANTS, Variant

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "AccelerateState",
    "MinimizeInfo",
    "ScaleByAAMSGradState",
    "ScaleByAAdaMaxState",
    "ScaleByAAdamState",
    "Variant",
    "aadam",
    "aadamax",
    "aadamw",
    "aamsgrad",
    "accelerate",
    "cautious",
    "cautious_aadamw",
    "cautious_adamw",
    "minimize",
    "scale_by_aadam",
    "scale_by_aadamax",
    "scale_by_aamsgrad",
    "scale_by_cautious",
    "state_shardings",
]
