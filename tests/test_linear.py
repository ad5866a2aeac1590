"""linear_cross_entropy, linear_token_logprobs, linear_softmax_entropy: every backend that runs
here x dtype vs the float64 specification (F.linear then the logits-level op), gradients for
hidden, weight, bias and the temperature, in many chunks; and the logits never exist in full."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _util import LargestTensor, assert_close
from conftest import HAS_GPU, cpu_backends, gpu_backends

import thermokern
from thermokern import reference
from thermokern.ops import linear

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# (entropy_weight, label_smoothing, z_loss_weight)
CE_PARAMS = [(0.0, 0.0, 0.0), (-0.3, 0.1, 1e-3)]


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    """Chunks of a few rows, so that every test crosses many chunk boundaries."""
    monkeypatch.setattr(linear, "CHUNK_BYTES", {"cpu": 4096, "cuda": 4096})


def _inputs(n, d, v, dtype, bias=True):
    h = (torch.randn(n, d, dtype=torch.float64)).to(dtype).requires_grad_(True)
    w = (torch.randn(v, d, dtype=torch.float64) / d**0.5 * 3).to(dtype).requires_grad_(True)
    b = (torch.randn(v, dtype=torch.float64) * 0.5).to(dtype).requires_grad_(True) if bias else None
    t = torch.randint(0, v, (n,))
    t[::4] = -100
    return h, w, b, t


def _f64(*ts):
    return [None if t is None else t.detach().double().requires_grad_(True) for t in ts]


def _grads(out, ins, g):
    live = [t for t in ins if t is not None]
    gs = torch.autograd.grad(out, live, g)
    it = iter(gs)
    return [None if t is None else next(it) for t in ins]


def _check_grads(got, want, dtype):
    for a, b in zip(got, want, strict=True):
        if a is None:
            continue
        assert a.dtype == dtype
        assert_close(a, b, dtype, grad=True, grad_scale=4.0)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("params", CE_PARAMS, ids=str)
def test_linear_cross_entropy(backend, dtype, reduction, params):
    beta, eps, zw = params
    h, w, b, t = _inputs(37, 16, 300, dtype)
    kw = {"entropy_weight": beta, "label_smoothing": eps, "z_loss_weight": zw, "temperature": 0.9}
    out = thermokern.linear_cross_entropy(h, w, t, bias=b, reduction=reduction, backend=backend, **kw)
    h64, w64, b64 = _f64(h, w, b)
    ref = reference.linear_cross_entropy(h64, w64, t, bias=b64, reduction=reduction, **kw)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert out.shape == ref.shape
    assert_close(out, ref.detach(), dtype)
    g = torch.randn(ref.shape, dtype=torch.float64)
    _check_grads(_grads(out, [h, w, b], g.to(out.dtype)), _grads(ref, [h64, w64, b64], g), dtype)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_token_logprobs(backend, dtype):
    h, w, b, t = _inputs(29, 16, 300, dtype)
    h = h.detach().reshape(29, 1, 16).requires_grad_(True)  # leading dims
    t = t.reshape(29, 1)
    temp = torch.rand(29, 1, dtype=torch.float64) + 0.5  # per row
    logp, ent = thermokern.linear_token_logprobs(
        h, w, t, bias=b, temperature=temp, with_entropy=True, backend=backend
    )
    h64, w64, b64 = _f64(h, w, b)
    rl, re = reference.linear_token_logprobs(h64, w64, t, bias=b64, temperature=temp, with_entropy=True)
    assert_close(logp, rl.detach(), dtype)
    assert_close(ent, re.detach(), dtype)
    gl, ge = torch.randn(rl.shape, dtype=torch.float64), torch.randn(rl.shape, dtype=torch.float64)
    got = _grads((logp * gl.to(logp.dtype)).sum() + (ent * ge.to(ent.dtype)).sum(), [h, w, b], None)
    want = _grads((rl * gl).sum() + (re * ge).sum(), [h64, w64, b64], None)
    _check_grads(got, want, dtype)
    only = thermokern.linear_token_logprobs(h, w, t, bias=b, temperature=temp, backend=backend)
    assert torch.equal(only.detach(), logp.detach())


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_softmax_entropy(backend, dtype):
    h, w, _, _ = _inputs(23, 16, 300, dtype, bias=False)
    out = thermokern.linear_softmax_entropy(h, w, temperature=1.3, backend=backend)
    h64, w64 = _f64(h, w)
    ref = reference.linear_softmax_entropy(h64, w64, temperature=1.3)
    assert_close(out, ref.detach(), dtype)
    g = torch.randn(ref.shape, dtype=torch.float64)
    _check_grads(_grads(out, [h, w], g.to(out.dtype)), _grads(ref, [h64, w64], g), dtype)


@pytest.mark.parametrize("backend", cpu_backends())
def test_equals_torch_without_extra_terms(backend):
    h, w, b, t = _inputs(31, 8, 50, torch.float64)
    out = thermokern.linear_cross_entropy(h, w, t, bias=b, backend=backend)
    ref = F.cross_entropy(F.linear(h, w, b), t)
    assert_close(out, ref, torch.float64)


@pytest.mark.parametrize("backend", cpu_backends())
def test_learnable_temperature_and_all_ignored(backend):
    h, w, b, t = _inputs(13, 8, 60, torch.float64)
    temp = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    out = thermokern.linear_cross_entropy(
        h, w, t, bias=b, temperature=temp, entropy_weight=0.2, backend=backend
    )
    out.backward()
    h64, w64, b64 = _f64(h, w, b)
    t64 = temp.detach().clone().requires_grad_(True)
    reference.linear_cross_entropy(h64, w64, t, bias=b64, temperature=t64, entropy_weight=0.2).backward()
    assert_close(temp.grad, t64.grad, torch.float64, grad=True)
    assert_close(h.grad, h64.grad, torch.float64, grad=True)
    # every target ignored: "mean" is NaN (as in PyTorch), the gradients are zero
    h.grad = None
    loss = thermokern.linear_cross_entropy(h, w, torch.full_like(t, -100), backend=backend)
    assert torch.isnan(loss)
    loss.backward()
    assert (h.grad == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_logits_never_exist_in_full(reduction):
    """No tensor as large as the (N, V) logits is ever created, forward or backward (the
    largest are the weight gradient, V x D, and the chunks)."""
    n, d, v = 64, 8, 1000
    h, w, b, t = _inputs(n, d, v, torch.float32)
    with LargestTensor() as probe:
        loss = thermokern.linear_cross_entropy(h, w, t, bias=b, reduction=reduction, backend="cpu")
        loss.sum().backward()
    assert probe.largest < n * v // 4, probe.largest


@pytest.mark.parametrize("learn_t", [False, True])
def test_one_logits_buffer(monkeypatch, learn_t):
    """A sweep over the chunks creates one (rows, V) tensor, the buffer of every chunk's
    logits: the row kernels write the gradient over them. With a learnable temperature, whose
    gradient reads both, a sweep that computes gradients also gives each chunk a gradient
    (and the product of the two), in chunks of a third of the rows."""
    n, d, v = 12, 8, 1000
    monkeypatch.setattr(linear, "CHUNK_BYTES", {"cpu": 6 * v * 4, "cuda": 6 * v * 4})
    h, w, _, t = _inputs(n, d, v, torch.float32)
    temperature = torch.tensor(1.5, requires_grad=learn_t)
    rows = 2 if learn_t else 6
    grad_sweep = [(rows, v)] * (1 + (2 * n // rows if learn_t else 0))
    # "mean": one sweep, with the gradients; "none": the forward's, then the backward's
    for reduction, want in (("mean", grad_sweep), ("none", [(6, v)] + grad_sweep)):
        with LargestTensor() as probe:
            loss = thermokern.linear_cross_entropy(h, w, t, temperature=temperature, reduction=reduction)
            loss.sum().backward()
        created = [s for s in probe.shapes if len(s) == 2 and s[1] == v]
        assert sorted(created) == sorted(want), reduction


def test_errors():
    h, w, b, t = _inputs(4, 8, 10, torch.float32)
    with pytest.raises(ValueError, match="weight"):
        thermokern.linear_cross_entropy(h, w[:, :5], t)
    with pytest.raises(ValueError, match="bias"):
        thermokern.linear_cross_entropy(h, w, t, bias=b[:3])
    with pytest.raises(TypeError, match="weight"):
        thermokern.linear_cross_entropy(h, w.double(), t)
    with pytest.raises(ValueError, match="target"):
        thermokern.linear_token_logprobs(h, w, torch.full_like(t, 10))
    with pytest.raises(ValueError, match="reduction"):
        thermokern.linear_cross_entropy(h, w, t, reduction="avg")


def test_modules():
    layer = torch.nn.Linear(8, 50)
    h = torch.randn(3, 5, 8, requires_grad=True)
    t = torch.randint(0, 50, (3, 5))
    loss_fn = thermokern.nn.LinearCrossEntropyLoss(entropy_weight=0.1, label_smoothing=0.05)
    loss = loss_fn(h, layer.weight, t, layer.bias)
    ref = thermokern.entropy_regularized_cross_entropy(layer(h), t, entropy_weight=0.1, label_smoothing=0.05)
    assert_close(loss, ref.detach(), torch.float32)
    loss.backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None
    head = thermokern.nn.TokenLogprobsHead.from_linear(layer, temperature=0.7)
    assert head.weight is layer.weight
    logp, ent = head(h, t)
    rl, re = thermokern.token_logprobs(layer(h), t, temperature=0.7, with_entropy=True)
    assert_close(logp, rl.detach(), torch.float32)
    assert_close(ent, re.detach(), torch.float32)
    assert "vocab=50" in repr(head)


def test_gradients_are_handed_over_not_copied(monkeypatch):
    """The weight and hidden gradients computed in the forward become ``.grad`` as they are
    (autograd copies a gradient that something else still references: a whole (V, D) fp32
    buffer); and a second backward through the graph (retain_graph) recomputes them."""
    from thermokern.ops import linear as lin

    seen = {}
    scaled = lin.HeadGrads.scaled

    def spy(self, *args):
        out = scaled(self, *args)
        seen.update(hidden=out[0].data_ptr(), weight=out[1].data_ptr())
        return out

    monkeypatch.setattr(lin.HeadGrads, "scaled", spy)
    hidden = torch.randn(6, 4, requires_grad=True)
    weight = torch.randn(9, 4, requires_grad=True)
    target = torch.randint(0, 9, (6,))
    loss = thermokern.linear_cross_entropy(hidden, weight, target)
    loss.backward(retain_graph=True)
    assert weight.grad.data_ptr() == seen["weight"] and hidden.grad.data_ptr() == seen["hidden"]
    first = weight.grad.clone(), hidden.grad.clone()
    loss.backward()  # accumulates the same gradients again
    assert_close(weight.grad, 2 * first[0], torch.float32, grad=True)
    assert_close(hidden.grad, 2 * first[1], torch.float32, grad=True)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_vocabulary_262144(backend, dtype):
    """The largest vocabulary the heads promise (the last class as a target). The gradients
    are compared in float64: in float32 the hidden gradient's sums over 262144 classes carry
    ~1e-4 of rounding, as they do in F.linear's own backward."""
    h, w, b, t = _inputs(6, 8, 262144, dtype)
    t[1] = 262143
    out = thermokern.linear_cross_entropy(h, w, t, bias=b, entropy_weight=0.1, backend=backend)
    logp = thermokern.linear_token_logprobs(h, w, t, bias=b, backend=backend)
    h64, w64, b64 = _f64(h, w, b)
    ref = reference.linear_cross_entropy(h64, w64, t, bias=b64, entropy_weight=0.1)
    assert_close(out, ref.detach(), dtype)
    assert_close(logp, reference.linear_token_logprobs(h64, w64, t, bias=b64).detach(), dtype)
    if dtype == torch.float64:
        _check_grads(_grads(out, [h, w, b], None), _grads(ref, [h64, w64, b64], None), dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(reduction):
    """gradcheck (float64) of every head w.r.t. hidden, weight, bias and the temperature."""
    h, w, b, t = _inputs(7, 4, 11, torch.float64)
    temp = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    kw = {"entropy_weight": 0.2, "label_smoothing": 0.1, "z_loss_weight": 0.01, "backend": "cpu"}

    def ce(h, w, b, temp):
        return thermokern.linear_cross_entropy(h, w, t, bias=b, temperature=temp, reduction=reduction, **kw)

    def logprobs(h, w, b, temp):
        return thermokern.linear_token_logprobs(
            h, w, t, bias=b, temperature=temp, with_entropy=True, backend="cpu"
        )

    def entropy(h, w, b, temp):
        return thermokern.linear_softmax_entropy(h, w, bias=b, temperature=temp, backend="cpu")

    for fn in (ce, logprobs, entropy):
        assert torch.autograd.gradcheck(fn, (h, w, b, temp)), fn.__name__


def test_compile_fullgraph():
    """torch.compile(fullgraph=True) of the heads ([Note: the heads under torch.compile]):
    the same values and gradients as eager, a learnable temperature included."""
    h, w, b, t = _inputs(37, 16, 300, torch.float32)
    temp = torch.tensor(0.9, requires_grad=True)
    kw = {"entropy_weight": -0.3, "label_smoothing": 0.1, "z_loss_weight": 1e-3, "backend": "cpu"}

    def step(h, w, b, temp):
        loss = thermokern.linear_cross_entropy(h, w, t, bias=b, temperature=temp, **kw)
        none = thermokern.linear_cross_entropy(h, w, t, bias=b, reduction="none", backend="cpu")
        logp, ent = thermokern.linear_token_logprobs(h, w, t, bias=b, with_entropy=True, backend="cpu")
        hs = thermokern.linear_softmax_entropy(h, w, backend="cpu")
        return loss + 0.1 * none.sum() + logp.sum() + 0.5 * ent.sum() + 0.2 * hs.sum()

    ins = (h, w, b, temp)
    want = step(*ins)
    want_grads = torch.autograd.grad(want, ins)
    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True)(*ins)
    got_grads = torch.autograd.grad(got, ins)
    assert_close(got, want.detach(), torch.float32)
    for a, r in zip(got_grads, want_grads, strict=True):
        assert_close(a, r, torch.float32, grad=True)


def _compiled_scalar_head(monkeypatch, device, backend, dtype, reduction, learn_t):
    """Compiled, a scalar cross-entropy head takes its gradients from the forward sweep
    (thermokern::linear_head, three matmuls a chunk), as eager does: the recomputing
    backward never runs, and values and gradients equal eager's."""
    h, w, b, t = (
        x.detach().to(device).requires_grad_(x.is_floating_point()) for x in _inputs(37, 16, 300, dtype)
    )
    temp = torch.tensor(0.9, device=device, requires_grad=learn_t)
    kw = {"entropy_weight": -0.3, "label_smoothing": 0.1, "reduction": reduction, "backend": backend}

    def step(h, w, b, temp):
        return 3.0 * thermokern.linear_cross_entropy(h, w, t, bias=b, temperature=temp, **kw)

    ins = (h, w, b, temp) if learn_t else (h, w, b)
    want = step(h, w, b, temp)
    want_grads = torch.autograd.grad(want, ins)

    def forbidden(*args, **kwargs):
        raise AssertionError("the compiled scalar loss took the eager head or recomputed its logits")

    monkeypatch.setattr(linear, "_head_grads", forbidden)
    monkeypatch.setattr(linear._LinearHead, "apply", forbidden)  # compiled: the custom ops only
    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True)(h, w, b, temp)
    got_grads = torch.autograd.grad(got, ins)
    assert_close(got, want.detach(), dtype)
    for a, r in zip(got_grads, want_grads, strict=True):
        assert a.dtype == r.dtype
        assert_close(a, r, dtype, grad=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("learn_t", [False, True])
def test_compile_scalar_loss_computes_gradients_in_forward(monkeypatch, dtype, reduction, learn_t):
    _compiled_scalar_head(monkeypatch, "cpu", "cpu", dtype, reduction, learn_t)


def test_opcheck_custom_ops():
    """torch.library.opcheck of thermokern::linear_head (the heads under torch.compile): per-row
    outputs (their backward thermokern::linear_head_bwd) and a scalar loss with the gradients
    its forward computes."""
    h, w, b, t = _inputs(9, 8, 50, torch.float32)
    inv_t = torch.full((1,), 1 / 0.9)
    temp = torch.full((9,), 0.9, requires_grad=True)
    op = torch.ops.thermokern.linear_head.default
    ce = [0.1, 0.05, 1e-3]
    every = [True] * 4
    torch.library.opcheck(op, (h, w, b, temp, t, inv_t, "ce", ce, -100, "none", "cpu", every))
    torch.library.opcheck(op, (h, w, None, None, t, inv_t, "logprobs", [], -100, "none", "cpu", every))
    torch.library.opcheck(op, (h, w, b, None, None, inv_t, "entropy", [], -100, "none", "cpu", every))
    torch.library.opcheck(op, (h, w, b, temp, t, inv_t, "ce", ce, -100, "mean", "cpu", every))
    h2, w2 = h.detach(), w.detach().requires_grad_(True)
    torch.library.opcheck(
        op, (h2, w2, None, None, t, inv_t, "ce", ce, -100, "sum", "cpu", [False, True, False, False])
    )


def _heads_vs_reference(backend, device, dtype, learn_t, v):
    """linear_cross_entropy (every term, a temperature learnable or not) and
    linear_token_logprobs on ``device`` against float64 on the CPU: values and the gradients
    w.r.t. hidden, weight, bias (and the temperature)."""
    h, w, b, t = _inputs(48, 32, v, dtype)
    temp = torch.tensor(0.9, dtype=torch.float64)
    kw = {"entropy_weight": -0.3, "label_smoothing": 0.1, "z_loss_weight": 1e-3}
    ins = [x.detach().to(device).requires_grad_(True) for x in (h, w, b)]
    ins.append(temp.to(device).requires_grad_(learn_t))
    ins64 = [x.detach().double().requires_grad_(x.requires_grad) for x in ins]
    td = t.to(device)
    out = thermokern.linear_cross_entropy(
        *ins[:2], td, bias=ins[2], temperature=ins[3], backend=backend, **kw
    )
    ref = reference.linear_cross_entropy(*ins64[:2], t, bias=ins64[2], temperature=ins64[3], **kw)
    assert_close(out.cpu(), ref.detach(), dtype)
    n_grads = 3 + learn_t
    got = torch.autograd.grad(out, ins[:n_grads])
    want = torch.autograd.grad(ref, ins64[:n_grads])
    for a, r in zip(got, want, strict=True):
        assert_close(a.cpu(), r, dtype, grad=True, grad_scale=4.0)
    logp, ent = thermokern.linear_token_logprobs(
        *ins[:2], td, bias=ins[2], with_entropy=True, backend=backend
    )
    rl, re = reference.linear_token_logprobs(*ins64[:2], t, bias=ins64[2], with_entropy=True)
    assert_close(logp.cpu(), rl.detach(), dtype)
    assert_close(ent.cpu(), re.detach(), dtype)
    got = torch.autograd.grad(logp.sum() + ent.sum(), ins[:3])
    want = torch.autograd.grad(rl.sum() + re.sum(), ins64[:3])
    for a, r in zip(got, want, strict=True):
        assert_close(a.cpu(), r, dtype, grad=True, grad_scale=4.0)


@pytest.mark.parametrize("backend", cpu_backends())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("learn_t", [False, True])
def test_heads_with_and_without_learnable_temperature(backend, dtype, learn_t):
    """With a learnable temperature the chunks keep a separate gradient; without, it is written
    over the logits: both against float64."""
    _heads_vs_reference(backend, "cpu", dtype, learn_t, v=300)


gpu = pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("learn_t", [False, True])
def test_gpu_heads_match_reference(monkeypatch, backend, dtype, learn_t):
    """The heads on the GPU (one-row chunks here: the in-place row kernels, and for 16-bit
    weights the fp32 weight-gradient sums in slabs of 512 rows) against float64 on the CPU."""
    monkeypatch.setattr(linear, "FP32_SLAB_BYTES", 512 * 32 * 4)
    _heads_vs_reference(backend, "cuda", dtype, learn_t, v=5003)


@pytest.mark.cuda
@gpu
@pytest.mark.parametrize("backend", gpu_backends() or ["cuda"])
def test_gpu_compiled_scalar_head(monkeypatch, backend):
    """The compiled scalar head on the GPU (thermokern::linear_head): as eager."""
    _compiled_scalar_head(monkeypatch, "cuda", backend, torch.bfloat16, "mean", True)
