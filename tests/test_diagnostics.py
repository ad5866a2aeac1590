"""thermokern.sampling.diagnostics: ``ess`` (bulk, tail) and ``rhat`` against ArviZ's numbers
(random, AR(1) and tied samples, odd draws, one chain, constant and NaN elements), shapes,
dtypes and devices, errors, and sanity checks that need no reference (iid and AR(1) chains,
invariance under increasing maps, disagreeing chains).

The statistical bounds use fixed seeds, so they are deterministic; each comment gives the
margin in standard deviations of the checked estimate."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import HAS_GPU

from thermokern.sampling.diagnostics import ess, rhat

RTOL = 1e-6  # against ArviZ (observed: a few 1e-15)


def _ar1(chains: int, draws: int, event: int, rho: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Stationary Gaussian AR(1) chains (unit marginal variance), shape (chains, draws, event)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(chains, draws, event, generator=g, dtype=torch.float64)
    x = torch.empty_like(noise)
    x[:, 0] = noise[:, 0]
    scale = math.sqrt(1.0 - rho * rho)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + scale * noise[:, t]
    return x.to(dtype)


def _samples(kind: str, chains: int, draws: int, event: int, seed: int) -> torch.Tensor:
    if kind == "iid":
        return torch.randn(
            chains, draws, event, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
    x = _ar1(chains, draws, event, 0.9, seed)
    if kind == "ar1_rounded":  # many ties: ranks are averaged, quantiles land on tied values
        x = torch.round(2.0 * x)
    elif kind == "ar1_float32":
        x = x.float()
    return x


def _assert_matches(ours: torch.Tensor, want: list[float]) -> None:
    want_t = torch.tensor(want, dtype=torch.float64)
    assert ours.dtype == torch.float64 and ours.shape == want_t.shape
    both_nan = ours.isnan() & want_t.isnan()
    rel = ((ours - want_t).abs() / want_t.abs()).where(~both_nan & (ours != want_t), 0.0)
    assert not rel.isnan().any(), (ours, want_t)
    assert rel.max() <= RTOL, (ours, want_t, rel.max())


@pytest.fixture(scope="module")
def arviz():
    az = pytest.importorskip("arviz")
    return az


def _arviz(az, fn: str, x: torch.Tensor, **kw) -> list[float]:
    """ArviZ's value for each event element of (chain, draw, event) samples."""
    a = x.numpy()
    with warnings.catch_warnings():  # NaN and constant inputs warn
        warnings.simplefilter("ignore")
        return [float(getattr(az, fn)(a[..., i], **kw)) for i in range(a.shape[-1])]


# ----------------------------------------------------------------------------- vs ArviZ
SHAPES = [(1, 4), (1, 7), (1, 400), (2, 4), (2, 9), (3, 101), (4, 250), (4, 251), (8, 60)]


@pytest.mark.parametrize("kind", ["iid", "ar1", "ar1_rounded", "ar1_float32"])
@pytest.mark.parametrize(("chains", "draws"), SHAPES)
def test_matches_arviz(arviz, kind, chains, draws):
    x = _samples(kind, chains, draws, 3, seed=chains * 1000 + draws)
    _assert_matches(ess(x), _arviz(arviz, "ess", x, method="bulk"))
    _assert_matches(ess(x, method="tail"), _arviz(arviz, "ess", x, method="tail"))
    if chains > 1:  # ArviZ's R-hat needs two chains (NaN otherwise); ours raises
        _assert_matches(rhat(x), _arviz(arviz, "rhat", x, method="rank"))


def test_matches_arviz_special_values(arviz):
    """Constant elements, chains constant at different values, binary samples (heavy ties), a
    NaN (also as the dropped middle draw), infinities."""
    g = torch.Generator().manual_seed(3)
    c, d = 3, 21
    cols = [
        torch.full((c, d), 2.5, dtype=torch.float64),
        torch.arange(c, dtype=torch.float64)[:, None].expand(c, d),
        (torch.rand(c, d, generator=g, dtype=torch.float64) < 0.3).double(),
        (torch.rand(c, d, generator=g, dtype=torch.float64) < 0.03).double(),
        torch.randn(c, d, generator=g, dtype=torch.float64).index_put_((torch.tensor([1]), torch.tensor([d // 2])), torch.tensor(math.nan, dtype=torch.float64)),
        torch.randn(c, d, generator=g, dtype=torch.float64).index_put_((torch.tensor([0, 2]), torch.tensor([3, 7])), torch.tensor(math.inf, dtype=torch.float64)),
    ]  # fmt: skip
    x = torch.stack(cols, dim=-1)
    b, t, r = ess(x), ess(x, method="tail"), rhat(x)
    _assert_matches(b, _arviz(arviz, "ess", x, method="bulk"))
    _assert_matches(t, _arviz(arviz, "ess", x, method="tail"))
    _assert_matches(r, _arviz(arviz, "rhat", x, method="rank"))
    # What the docstrings promise: constant -> M n split draws and R-hat NaN; constant but
    # different chains -> R-hat inf; a NaN draw -> NaN.
    split_draws = 2 * c * (d // 2)
    assert b[0] == t[0] == split_draws and r[0].isnan()
    assert r[1].isinf()
    assert b[4].isnan() and t[4].isnan() and r[4].isnan()


# ----------------------------------------------------------------------------- sanity
def test_iid_chains_have_ess_near_the_number_of_draws():
    x = torch.randn(4, 1000, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # The per-element relative ESS has sd ~0.045 (bulk and tail): the means over 64 elements
    # have sd ~0.006, bounds >= 7 sd away (the estimator is biased low by ~2-4 %).
    assert 0.93 < (ess(x) / 4000).mean() < 1.05
    assert 0.91 < (ess(x, method="tail") / 4000).mean() < 1.05
    assert rhat(x).max() < 1.01


def test_ar1_bulk_ess_matches_the_integrated_autocorrelation_time():
    rho = 0.9
    x = _ar1(4, 2000, 32, rho, seed=1)
    tau = (1 + rho) / (1 - rho)  # 19 for a Gaussian AR(1)
    # Per-element relative ESS sd ~0.13 at 2000 draws: the mean over 32 has sd ~0.023.
    assert 0.85 < (ess(x) / (4 * 2000 / tau)).mean() < 1.15
    assert rhat(x).max() < 1.05


def test_disagreeing_chains_give_large_rhat_and_small_ess():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 500, 2, generator=g, dtype=torch.float64)
    x[0, :, 0] += 1.0  # one chain off in location: the bulk R-hat sees it
    x[0, :, 1] *= 4.0  # one chain off in scale: only the folded R-hat sees it
    r = rhat(x)
    assert (r > 1.05).all(), r
    assert ess(x)[0] < 0.5 * ess(torch.randn(4, 500, generator=g, dtype=torch.float64))


def test_invariant_under_increasing_maps():
    """The bulk ESS depends on the ranks only, the tail ESS on which draws lie below the
    interpolated 5 % / 95 % quantiles: a strictly increasing map changes neither."""
    x = _ar1(3, 300, 4, 0.8, seed=4)
    y = torch.exp(x) * 3.0 - 7.0
    torch.testing.assert_close(ess(y), ess(x), rtol=0, atol=0)
    torch.testing.assert_close(ess(y, method="tail"), ess(x, method="tail"), rtol=0, atol=0)
    # nor does relabelling the chains and the event elements
    perm = x[[2, 0, 1]][..., [3, 1, 0, 2]]
    torch.testing.assert_close(ess(perm), ess(x)[[3, 1, 0, 2]], rtol=1e-12, atol=0)
    torch.testing.assert_close(rhat(perm), rhat(x)[[3, 1, 0, 2]], rtol=1e-12, atol=0)


def test_ties_get_their_average_rank():
    """The rank of a value is (number of smaller values) + (number of equal values + 1) / 2."""
    from thermokern.sampling.diagnostics import _average_ranks

    v = torch.randint(0, 6, (5, 40), generator=torch.Generator().manual_seed(5)).double()
    less = (v[:, None, :] < v[:, :, None]).sum(-1)
    equal = (v[:, None, :] == v[:, :, None]).sum(-1)
    ranks, ordered = _average_ranks(v)
    torch.testing.assert_close(ranks, (less + (equal + 1) / 2.0).double(), rtol=0, atol=0)
    torch.testing.assert_close(ordered, v.sort(-1).values, rtol=0, atol=0)
    # at the public level: rounded samples (many ties) give finite diagnostics
    x = torch.round(_ar1(2, 50, 3, 0.5, seed=5) * 2)
    assert torch.isfinite(ess(x)).all() and torch.isfinite(ess(x, method="tail")).all()
    assert torch.isfinite(rhat(x)).all()


# ----------------------------------------------------------------------------- shapes, dtypes, devices
def test_shapes_and_layout():
    x = torch.randn(3, 40, 2, 5)
    assert ess(x).shape == (2, 5) and rhat(x).shape == (2, 5)
    assert ess(x[..., 0, 0]).shape == () and rhat(x[..., 0, 0]).shape == ()
    torch.testing.assert_close(ess(x)[1, 3], ess(x[..., 1, 3]), rtol=0, atol=0)
    torch.testing.assert_close(rhat(x)[1, 3], rhat(x[..., 1, 3]), rtol=0, atol=0)
    # non-contiguous input: the same numbers
    y = torch.randn(5, 2, 40).permute(1, 2, 0)  # (chain, draw, event) as a transposed view
    torch.testing.assert_close(ess(y, method="tail"), ess(y.contiguous(), method="tail"), rtol=0, atol=0)
    torch.testing.assert_close(rhat(y), rhat(y.contiguous()), rtol=0, atol=0)
    # an empty event
    e = torch.randn(2, 10, 0, 3)
    assert ess(e).shape == (0, 3) and rhat(e).shape == (0, 3) and ess(e).dtype == torch.float64
    # not differentiated through
    g = torch.randn(2, 10, requires_grad=True)
    assert not ess(g).requires_grad and not rhat(g).requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    x = _ar1(2, 64, 4, 0.5, seed=6, dtype=dtype)
    ref = x.double()  # the same (already rounded) values
    for got, want in [(ess(x), ess(ref)), (ess(x, method="tail"), ess(ref, method="tail"))]:
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=0, atol=0)  # ranks and quantiles: exact
    r = rhat(x)
    assert r.dtype == torch.float64
    # the folded draws are formed in float32 for 16-bit samples: at most a tie more or less
    torch.testing.assert_close(r, rhat(ref), rtol=1e-3, atol=0)


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
def test_cuda_matches_cpu():
    x = torch.round(_ar1(4, 301, 6, 0.9, seed=7) * 3)
    xc = x.cuda()
    for method in ("bulk", "tail"):
        out = ess(xc, method=method)
        assert out.device == xc.device and out.dtype == torch.float64
        torch.testing.assert_close(out.cpu(), ess(x, method=method), rtol=1e-12, atol=0)
    torch.testing.assert_close(rhat(xc).cpu(), rhat(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(rhat(xc.float()).cpu(), rhat(x.float()), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- errors
def test_errors():
    x = torch.randn(2, 10)
    with pytest.raises(TypeError, match="samples"):
        ess(x.numpy())
    with pytest.raises(TypeError, match="samples"):
        rhat(torch.ones(2, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="samples.*2 dimensions"):
        ess(torch.randn(10))
    with pytest.raises(ValueError, match="samples.*4 draws"):
        ess(torch.randn(4, 3))
    with pytest.raises(ValueError, match="samples.*4 draws"):
        rhat(torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="samples.*2 chain"):
        rhat(torch.randn(1, 100))
    with pytest.raises(ValueError, match="samples.*1 chain"):
        ess(torch.randn(0, 100))
    for bad in ("mean", "Bulk", None):
        with pytest.raises(ValueError, match="method"):
            ess(x, method=bad)
    assert ess(torch.randn(1, 4)).shape == ()  # the smallest accepted
