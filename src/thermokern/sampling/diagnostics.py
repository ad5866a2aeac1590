"""``ess`` and ``rhat``: convergence diagnostics of MCMC samples (Vehtari et al. 2021).

``rhat`` is the rank-normalised split-R-hat and ``ess`` the bulk or tail effective sample size
of Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis 16(2).
Both take samples laid out as ArviZ lays them out, ``(chain, draw, *event)``, and give one
value per event element, with ArviZ's numbers (``arviz.rhat(..., method="rank")`` and
``arviz.ess(..., method="bulk" | "tail")``, ArviZ 0.23).

The steps, all in torch on the samples' device, vectorised over the event elements (no
host synchronisation, no loop over elements):

* split: every chain becomes two half chains (the middle draw of an odd number of draws is
  dropped), so that a trend within a chain shows up as disagreement between chains;
* rank normalisation: the ranks ``r`` of all split draws of an element (ties get their average
  rank) become normal scores ``z = Phi^-1((r - 3/8) / (S + 1/4))``, S the number of split
  draws (Blom's offsets: the paper writes the denominator ``S - 1/4``; Blom (1958) and ArviZ
  use ``S + 1/4``, and so do we);
* R-hat of half chains of n draws: ``sqrt(((n - 1) / n W + B / n) / W)`` with W the mean
  within-chain variance and B / n the variance of the chain means; ``rhat`` is the larger of
  the R-hat of the normal scores (bulk) and of the normal scores of the folded draws
  ``|x - median|`` (tails);
* ESS: ``M n / tau`` with the integrated autocorrelation time ``tau = -1 + 2 sum rho_t`` of the
  M half chains, the autocovariances from one FFT per chain, the multi-chain autocorrelations
  ``rho_t = 1 - (W - mean_c acov_c(t)) / var_plus`` (``var_plus = (n - 1) / n W + B / n``),
  the sum truncated by Geyer's initial positive sequence and made monotone (Geyer's initial
  monotone sequence); ``tau`` is kept at least ``1 / log10(M n)``. Bulk ESS is that of the
  normal scores; tail ESS the smaller of those of the indicators ``I(x <= q)`` at the 5 % and
  95 % quantiles (R's type 7, over all draws before the split).

Everything is computed in float64 (the folded draws are formed in the samples' accumulation
dtype first, as ArviZ forms them in the array's dtype); the results are float64.
"""

from __future__ import annotations

import math

import torch

from thermokern._checks import check_float_tensor
from thermokern._dtypes import acc_dtype

__all__ = ["ess", "rhat"]

ESS_METHODS = ("bulk", "tail")
MIN_DRAWS = 4  # ArviZ's minimum (two draws per half chain)
TAIL_PROBS = (0.05, 0.95)
_BLOM = 3.0 / 8.0
_CONSTANT_RANGE = 1e-15  # float64's resolution: a sequence spanning less counts as constant


# ----------------------------------------------------------------------------- helpers
def _checked_samples(samples: object, min_chains: int, fn: str) -> tuple[torch.Tensor, torch.Size]:
    """``samples`` (chain, draw, *event) as a detached (elements, chain, draw) view, and event."""
    check_float_tensor(samples, "samples")
    if samples.dim() < 2:
        raise ValueError(
            f"samples: expected shape (chain, draw, *event) (at least 2 dimensions), got a "
            f"{samples.dim()}-d tensor of shape {tuple(samples.shape)}"
        )
    chains, draws = samples.shape[0], samples.shape[1]
    if chains < min_chains:
        why = " (the split-R-hat compares chains)" if min_chains > 1 else ""
        raise ValueError(f"samples: {fn} needs at least {min_chains} chain(s){why}, got {chains}")
    if draws < MIN_DRAWS:
        raise ValueError(f"samples: {fn} needs at least {MIN_DRAWS} draws per chain (dim 1), got {draws}")
    event = samples.shape[2:]
    x = samples.detach().reshape(chains, draws, math.prod(event)).permute(2, 0, 1)
    return x, event


def _split(x: torch.Tensor) -> torch.Tensor:
    """(E, C, D) -> (E, 2C, D // 2): the first halves of the chains, then the last halves."""
    half = x.shape[-1] // 2
    return torch.cat((x[..., :half], x[..., x.shape[-1] - half :]), dim=1)


def _has_nan(x: torch.Tensor) -> torch.Tensor:
    """Per element (dim 0): whether any of its values is NaN."""
    return torch.isnan(x).flatten(1).any(1)


def _average_ranks(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks (1..S, float64, ties averaged) along the last dim of (E, S), and the sorted values."""
    s = values.shape[-1]
    ordered, order = values.sort(dim=-1)
    pos = torch.arange(s, device=values.device).expand_as(order)
    new = torch.ones_like(order, dtype=torch.bool)  # where a run of equal values starts
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    last = torch.ones_like(new)  # where it ends
    last[:, :-1] = new[:, 1:]
    first_pos = torch.where(new, pos, 0).cummax(dim=-1).values
    last_pos = torch.where(last, pos, s - 1).flip(-1).cummin(dim=-1).values.flip(-1)
    mean_rank = (first_pos + last_pos).to(torch.float64) / 2.0 + 1.0
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank), ordered


def _normal_scores(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-normalised (E, M, n) draws (float64) and the sorted (E, M n) values."""
    e, m, n = y.shape
    ranks, ordered = _average_ranks(y.reshape(e, m * n))
    z = torch.special.ndtri((ranks - _BLOM) / (m * n - 2 * _BLOM + 1))
    return z.reshape(e, m, n), ordered


def _fft_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (a length every FFT backend handles fast)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _split_rhat(z: torch.Tensor) -> torch.Tensor:
    """Split-R-hat of (E, M, n) float64 half chains -> (E,)."""
    n = z.shape[-1]
    between = n * z.mean(-1).var(-1, correction=1)
    within = z.var(-1, correction=1).mean(-1)
    return torch.sqrt((between / within + n - 1) / n)


def _ess(y: torch.Tensor) -> torch.Tensor:
    """ESS of (E, M, n) float64 half chains -> (E,) float64 (Geyer's initial monotone sequence)."""
    e, m, n = y.shape
    # Pair k is (rho_2k, rho_2k+1). After pair k the sum goes on while rho_2k + rho_2k+1 > 0
    # and 2k + 1 < n - 3, so pairs up to ceil((n - 4) / 2) (lags up to n - 1) may be needed.
    n_pairs = max(0, -(-(n - 4) // 2)) + 1
    lags = 2 * n_pairs
    size = _fft_len(2 * n)  # zero padding: no wrap-around
    spec = torch.fft.rfft(y - y.mean(-1, keepdim=True), n=size, dim=-1)
    power = spec.real.square() + spec.imag.square()
    acov = torch.fft.irfft(power, n=size, dim=-1)[..., :lags] / n  # (E, M, lags)
    acov_mean = acov.mean(1)
    within = acov_mean[:, 0] * n / (n - 1.0)  # mean within-chain variance (unbiased)
    var_plus = within * (n - 1.0) / n + y.mean(-1).var(-1, correction=1)
    rho = 1.0 - (within[:, None] - acov_mean) / var_plus[:, None]
    rho[:, 0] = 1.0
    pairs = rho.reshape(e, n_pairs, 2)
    even = pairs[..., 0]
    pair_sum = pairs.sum(-1)
    k = torch.arange(n_pairs, device=y.device)
    go_on = (pair_sum > 0) & (2 * k + 1 < n - 3)
    stop = go_on.to(torch.int64).cumprod(-1).sum(-1, keepdim=True)  # the last pair computed
    # The pairs before it enter monotone (a running minimum of the pair sums), the even lag of
    # the last pair enters once where it is positive or its pair's sum is >= 0.
    monotone = pair_sum.cummin(-1).values
    head = torch.where(k < stop, monotone, 0.0).sum(-1)
    even_last = even.gather(-1, stop).squeeze(-1)
    sum_last = pair_sum.gather(-1, stop).squeeze(-1)
    tail = torch.where((even_last > 0) | (sum_last >= 0), even_last, 0.0)
    tau = -1.0 + 2.0 * head + tail
    floor = 1.0 / math.log10(m * n)
    tau = torch.where(floor > tau, floor, tau)  # NaN stays NaN
    out = torch.where(torch.isnan(rho[:, 1]), math.nan, (m * n) / tau)
    # Constant half chains (var_plus = 0) count as M n independent draws.
    span = y.flatten(1).amax(1) - y.flatten(1).amin(1)
    return torch.where(span < _CONSTANT_RANGE, float(m * n), out)


def _type7_quantile(ordered: torch.Tensor, p: float) -> torch.Tensor:
    """R's type-7 quantile of each row of sorted float64 values (E, S), as ArviZ evaluates it."""
    s = ordered.shape[-1]
    pos = s * p + (1.0 + p * -1.0)
    k = math.floor(min(max(pos, 1), s - 1))
    gamma = min(max(pos - k, 0.0), 1.0)
    return (1.0 - gamma) * ordered[:, k - 1] + gamma * ordered[:, k]


# ----------------------------------------------------------------------------- public
def ess(samples: torch.Tensor, *, method: str = "bulk") -> torch.Tensor:
    """Bulk or tail effective sample size of MCMC samples, per event element.

    The rank-normalised split ESS of Vehtari et al. (2021), equal to ArviZ's
    ``arviz.ess(..., method="bulk" | "tail")``. Every chain is split in two halves (the middle
    draw of an odd count dropped), then

    * ``"bulk"``: the ESS of the normal scores of the ranks of all split draws (ties averaged),
      a measure of how well the centre of the distribution is explored;
    * ``"tail"``: the smaller ESS of the indicators ``I(x <= q05)`` and ``I(x <= q95)``, the
      5 % and 95 % quantiles (R's type 7) of all draws: how well the tails are explored.

    Each ESS is ``M n / tau`` for M half chains of n draws, ``tau = -1 + 2 sum rho_t`` from
    FFT autocovariances combined over chains, truncated and made monotone as in Geyer's
    initial monotone sequence, and kept at least ``1 / log10(M n)`` (so the ESS never exceeds
    ``M n log10(M n)``). Computed on the samples' device in float64, vectorised over elements.

    Special cases, as in ArviZ: an element whose (normal scores or indicator) values are all
    equal, e.g. a constant element, gets ESS ``M n`` (the number of split draws); an element
    with a NaN draw gets NaN. A single chain is allowed.

    Args:
        samples: float tensor of shape ``(chain, draw, *event)`` (float32/64/16/bf16, any
            device), at least 4 draws. Not differentiated through.
        method: ``"bulk"`` or ``"tail"``.

    Returns:
        float64 tensor of shape ``event`` (0-dim for ``(chain, draw)`` samples) on the samples'
        device.

    Raises:
        TypeError: ``samples`` is not a floating-point tensor.
        ValueError: fewer than 2 dimensions, no chain, fewer than 4 draws, or a ``method``
            other than ``"bulk"`` / ``"tail"``.

    Example:
        >>> import torch
        >>> from thermokern.sampling.diagnostics import ess
        >>> x = torch.randn(4, 1000, 3)  # 4 chains of 1000 independent draws, 3 parameters
        >>> ess(x).shape, ess(x, method="tail").dtype
        (torch.Size([3]), torch.float64)
    """
    if not isinstance(method, str) or method not in ESS_METHODS:
        raise ValueError(f"method: expected one of {ESS_METHODS}, got {method!r}")
    x, event = _checked_samples(samples, 1, "ess")
    if x.shape[0] == 0:
        return torch.empty(event, dtype=torch.float64, device=samples.device)
    split = _split(x)
    if method == "bulk":
        out = _ess(_normal_scores(split)[0])
    else:
        e = x.shape[0]
        ordered = x.reshape(e, -1).to(torch.float64).sort(dim=-1).values
        split64 = split.to(torch.float64)
        low, high = (
            _ess((split64 <= _type7_quantile(ordered, p)[:, None, None]).to(torch.float64))
            for p in TAIL_PROBS
        )
        out = torch.where(high < low, high, low)
    return torch.where(_has_nan(x), math.nan, out).reshape(event)


def rhat(samples: torch.Tensor) -> torch.Tensor:
    """Rank-normalised split-R-hat of MCMC samples, per event element.

    The R-hat of Vehtari et al. (2021), equal to ArviZ's ``arviz.rhat(..., method="rank")``:
    every chain is split in two halves (the middle draw of an odd count dropped); the
    split-R-hat ``sqrt(((n - 1) / n W + B / n) / W)`` (W the mean within-half-chain variance,
    B / n the variance of the half-chain means, n draws per half) is computed for the normal
    scores of the ranks of all split draws (ties averaged; sensitive to differences in
    location) and for those of the folded draws ``|x - median|`` (sensitive to differences in
    scale); the result is the larger of the two. Values near 1 (below 1.01) indicate that the
    chains agree. Computed on the samples' device in float64, vectorised over elements.

    Special cases, as in ArviZ: a constant element gives NaN (0 / 0); half chains that are
    each constant but differ give inf; an element with a NaN draw gives NaN. Where the folded
    draws' R-hat is NaN (an infinite median) the bulk R-hat is returned, as ArviZ's
    ``max(bulk, folded)`` does.

    Args:
        samples: float tensor of shape ``(chain, draw, *event)`` (float32/64/16/bf16, any
            device), at least 2 chains and 4 draws. Not differentiated through. The folded
            draws are formed in float32 for 16-bit samples, else in the samples' dtype.

    Returns:
        float64 tensor of shape ``event`` (0-dim for ``(chain, draw)`` samples) on the samples'
        device.

    Raises:
        TypeError: ``samples`` is not a floating-point tensor.
        ValueError: fewer than 2 dimensions, a single chain (ArviZ returns NaN there), or
            fewer than 4 draws.

    Example:
        >>> import torch
        >>> from thermokern.sampling.diagnostics import rhat
        >>> x = torch.randn(4, 1000)
        >>> bool(rhat(x) < 1.01)
        True
    """
    x, event = _checked_samples(samples, 2, "rhat")
    if x.shape[0] == 0:
        return torch.empty(event, dtype=torch.float64, device=samples.device)
    split = _split(x)
    z, ordered = _normal_scores(split)
    bulk = _split_rhat(z)
    mid = ordered.shape[-1] // 2  # an even number of split draws: the median is a mean of two
    dt = acc_dtype(x.dtype)
    median = (ordered[:, mid - 1].to(dt) + ordered[:, mid].to(dt)) / 2
    folded = (split.to(dt) - median[:, None, None]).abs()
    tails = torch.where(_has_nan(folded), math.nan, _split_rhat(_normal_scores(folded)[0]))
    out = torch.where(tails > bulk, tails, bulk)
    return torch.where(_has_nan(x), math.nan, out).reshape(event)
