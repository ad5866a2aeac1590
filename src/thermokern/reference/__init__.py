"""The specification of thermokern in plain PyTorch, at two levels.

* :mod:`thermokern.reference.spec` (re-exported here): every public op, what the tests compare
  the ops against in float64 and what ``backend="reference"`` runs.
* :mod:`thermokern.reference.kernels`: every kernel's contract (the schemas of
  csrc/thermokern.cpp: the per-row statistics a forward kernel returns, the gradient a backward
  kernel computes from them), the ``reference`` implementation of each
  :class:`thermokern._dispatch.KernelOp`. ``thermokern.distributed`` merges such statistics
  across ranks whatever the backend.
"""

from thermokern._dtypes import acc_dtype
from thermokern.reference import kernels
from thermokern.reference.spec import (
    entropy_regularized_cross_entropy,
    free_energy,
    langevin_noise,
    langevin_noise_std,
    langevin_step,
    linear_cross_entropy,
    linear_softmax_entropy,
    linear_token_logprobs,
    log_partition,
    logsumexp,
    mala_accept,
    mala_counters,
    mala_uniform,
    philox_randint4x,
    philox_uniform,
    reduce_dims,
    softmax_entropy,
    thermo_stats,
    token_logprobs,
)

__all__ = [
    "acc_dtype",
    "entropy_regularized_cross_entropy",
    "free_energy",
    "kernels",
    "langevin_noise",
    "langevin_noise_std",
    "langevin_step",
    "linear_cross_entropy",
    "linear_softmax_entropy",
    "linear_token_logprobs",
    "log_partition",
    "logsumexp",
    "mala_accept",
    "mala_counters",
    "mala_uniform",
    "philox_randint4x",
    "philox_uniform",
    "reduce_dims",
    "softmax_entropy",
    "thermo_stats",
    "token_logprobs",
]
