"""nn.Module wrappers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _util import assert_close

import thermokern
from thermokern import nn as tnn


def test_softmax_entropy_module():
    x = torch.randn(4, 6, 9)
    m = tnn.SoftmaxEntropy(dim=1, temperature=0.5, reduction="mean")
    assert_close(m(x), thermokern.softmax_entropy(x, 1, temperature=0.5).double().mean(), torch.float32)
    per_row = tnn.SoftmaxEntropy(temperature=torch.rand(4, 6) + 0.5)
    assert per_row(x).shape == (4, 6)
    assert "temperature" in dict(per_row.named_buffers())


def test_cross_entropy_module_is_cross_entropy_at_beta_zero():
    x = torch.randn(8, 20, requires_grad=True)
    t = torch.randint(0, 20, (8,))
    t[0] = -100
    m = tnn.EntropyRegularizedCrossEntropyLoss(label_smoothing=0.1)
    ref = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(x, t)
    assert_close(m(x, t).detach(), ref.detach(), torch.float32)
    out = tnn.EntropyRegularizedCrossEntropyLoss(entropy_weight=0.5, reduction="sum")(x, t)
    ce = F.cross_entropy(x, t, reduction="sum")
    h = thermokern.softmax_entropy(x)[1:].sum()
    assert_close(out.detach(), (ce - 0.5 * h).detach(), torch.float32)
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
