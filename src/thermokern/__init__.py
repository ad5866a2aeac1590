"""thermokern: fused entropy, partition-function and Langevin kernels for PyTorch.

Importing thermokern loads the native extension ``thermokern._C`` (which registers
``torch.ops.thermokern.*``); the Triton kernels load on first use.
"""

from __future__ import annotations

from thermokern import nn, sampling
from thermokern._backend import BACKENDS, BackendInfo, available_backends
from thermokern.ops.cross_entropy import entropy_regularized_cross_entropy
from thermokern.ops.entropy import softmax_entropy
from thermokern.ops.langevin import langevin_step, langevin_step_
from thermokern.ops.mala import mala_counters, mala_step

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "__version__",
    "available_backends",
    "entropy_regularized_cross_entropy",
    "langevin_step",
    "langevin_step_",
    "mala_counters",
    "mala_step",
    "nn",
    "sampling",
    "softmax_entropy",
]
