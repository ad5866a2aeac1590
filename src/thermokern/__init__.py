"""thermokern: fused entropy, partition-function and Langevin kernels for PyTorch.

Importing thermokern loads the native extension ``thermokern._C`` (which registers
``torch.ops.thermokern.*``); the Triton kernels load on first use.
"""

from __future__ import annotations

from thermokern import distributed as distributed  # vocabulary-parallel ops (torch.distributed)
from thermokern import nn, optim, sampling
from thermokern._backend import BACKENDS, BackendInfo, available_backends
from thermokern.ops.cross_entropy import entropy_regularized_cross_entropy
from thermokern.ops.langevin import langevin_step, langevin_step_
from thermokern.ops.linear import linear_cross_entropy, linear_softmax_entropy, linear_token_logprobs
from thermokern.ops.mala import mala_counters, mala_step
from thermokern.ops.partition import ThermoStats, free_energy, log_partition, logsumexp, thermo_stats
from thermokern.ops.softmax_entropy import softmax_entropy
from thermokern.ops.token_logprobs import token_logprobs

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendInfo",
    "ThermoStats",
    "__version__",
    "available_backends",
    "distributed",
    "entropy_regularized_cross_entropy",
    "free_energy",
    "langevin_step",
    "langevin_step_",
    "linear_cross_entropy",
    "linear_softmax_entropy",
    "linear_token_logprobs",
    "log_partition",
    "logsumexp",
    "mala_counters",
    "mala_step",
    "nn",
    "optim",
    "sampling",
    "softmax_entropy",
    "thermo_stats",
    "token_logprobs",
]
