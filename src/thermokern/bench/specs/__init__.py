"""One module per benchmarked op; importing this package registers them all in
:data:`thermokern.bench.OPS`, in the order ``thermokern bench`` runs them.

Each module holds its op's eager baseline, providers, input and gradient makers, float64
reference chunks, default shapes and dtypes, and the :func:`~thermokern.bench.register` call.
``_rows`` has the helpers the row-reduction ops share; ``linear`` registers the three
language-model heads (``linear_cross_entropy``, ``linear_entropy_regularized_cross_entropy``,
``linear_token_logprobs``); ``mala_accept`` times the fused MALA accept/reject; ``ais`` times annealed importance sampling against eager loops.
"""

from . import (  # noqa: F401, I001  (registration order = run order, not alphabetical)
    softmax_entropy,
    cross_entropy,
    token_logprobs,
    logsumexp,
    thermo_stats,
    linear,
    langevin_step,
    mala_accept,
    langevin_sample,
    ais,
)
