"""The seed blog post's entropy-regularised training loop, as written and with thermokern.

Part 1 runs the blog's snippet (SimpleNet 10 -> 20 -> 2, Adam, 100 epochs) twice from the
same initial weights and data: (a) exactly as written, with its Python entropy term, and
(b) with ``thermokern.entropy_regularized_cross_entropy``. The snippet computes
``entropy_term = (probs * log(probs + 1e-8)).sum(1).mean()``, which is -H, and then
``loss - lambda_reg * entropy_term`` = CE + lambda * H: despite its comment, it *lowers* the
entropy. thermokern's loss is CE - beta * H, so the snippet is beta = -lambda. The two loss
trajectories agree up to the snippet's 1e-8 inside the log.

Part 2 times the same loss (forward + backward) at a realistic size, 8192 x 32000 by
default, where the Python term materialises several N x C tensors.

    python examples/seed_entropy_regularization.py [--size 8192x32000] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn, optim

import thermokern


class SimpleNet(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim):
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


def blog_loss(outputs, y, lambda_reg):
    """The snippet's loss, verbatim in substance."""
    loss = nn.CrossEntropyLoss()(outputs, y)
    probs = torch.softmax(outputs, dim=1)
    log_probs = torch.log(probs + 1e-8)
    entropy_term = (probs * log_probs).sum(dim=1).mean()
    return loss - lambda_reg * entropy_term  # = CE + lambda * H


def thermokern_loss(outputs, y, lambda_reg):
    # beta = -lambda reproduces the snippet; beta = +lambda would do what its comment says.
    return thermokern.entropy_regularized_cross_entropy(outputs, y, entropy_weight=-lambda_reg)


def train(model, loss_fn, x, y, lambda_reg=0.01, epochs=100, lr=1e-3):
    opt = optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        opt.zero_grad()
        total = loss_fn(model(x), y, lambda_reg)
        total.backward()
        opt.step()
        history.append(total.item())
    return history


def part1() -> float:
    torch.manual_seed(0)
    model = SimpleNet(10, 20, 2)
    x = torch.randn(100, 10)
    y = torch.randint(0, 2, (100,))
    a = train(copy.deepcopy(model), blog_loss, x, y)
    b = train(copy.deepcopy(model), thermokern_loss, x, y)
    print("Part 1: the blog's loop (lambda = 0.01), Python entropy term vs thermokern (beta = -lambda)")
    print(f"{'epoch':>5}  {'blog snippet':>12}  {'thermokern':>12}")
    for epoch in range(0, 100, 10):
        print(f"{epoch:>5}  {a[epoch]:>12.6f}  {b[epoch]:>12.6f}")
    diff = max(abs(p - q) for p, q in zip(a, b))
    print(f"max |difference| over 100 epochs: {diff:.2e} (the snippet's +1e-8 inside the log)\n")
    return diff


def _time(fn, reps=3):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def part2(n: int, c: int, device: str) -> None:
    torch.manual_seed(0)
    x = (torch.randn(n, c, device=device) * 2).requires_grad_(True)
    y = torch.randint(0, c, (n,), device=device)
    lam = 0.01

    def step(loss_fn):
        def run():
            x.grad = None
            loss_fn(x, y, lam).backward()
            if device == "cuda":
                torch.cuda.synchronize()

        return run

    compiled = torch.compile(blog_loss)
    t_eager = _time(step(blog_loss))
    t_compile = _time(step(compiled))
    t_tk = _time(step(thermokern_loss))
    print(f"Part 2: loss forward + backward at {n}x{c} float32 on {device}")
    print(f"  Python entropy term, eager     {t_eager * 1e3:9.1f} ms")
    print(f"  same, torch.compile            {t_compile * 1e3:9.1f} ms")
    print(f"  thermokern fused               {t_tk * 1e3:9.1f} ms")
    print(f"  speed-up: {t_eager / t_tk:.1f}x vs eager, {t_compile / t_tk:.1f}x vs torch.compile (one run)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="8192x32000", help="N x C of part 2")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-part2", action="store_true")
    args = p.parse_args()
    part1()
    if not args.skip_part2:
        n, c = (int(v) for v in args.size.lower().split("x"))
        part2(n, c, args.device)


if __name__ == "__main__":
    main()
