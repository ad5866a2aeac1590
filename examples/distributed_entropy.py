"""A vocabulary-parallel LM head with thermokern.distributed (run it under torchrun).

    torchrun --nproc_per_node=2 examples/distributed_entropy.py                 # CPU, gloo
    torchrun --nproc_per_node=2 examples/distributed_entropy.py --device cuda   # a GPU per rank, NCCL

Every rank holds a slice of the output projection's columns (rank r owns vocabulary entries
[start_r, end_r); the slices need not be equal), computes its slice of the logits, and gets
the loss, entropy and log-partition over the *whole* vocabulary from one all_gather of a few
numbers per row. The gradient of its weight slice needs no communication. Rank 0 then checks
everything against the single-device ops on the full logits.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import thermokern
import thermokern.distributed as td


def run(device: str = "cpu", vocab: int = 1001, rows: int = 64, dim: int = 32) -> dict[str, float]:
    """One training-style step on this rank (the process group is initialised); returns the
    largest differences from the single-device ops."""
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)  # the same full tensors on every rank, for the check
    hidden = torch.randn(rows, dim, generator=g).to(device)
    weight = (torch.randn(dim, vocab, generator=g) / dim**0.5).to(device)
    target = torch.randint(0, vocab, (rows,), generator=g).to(device)
    target[::7] = -100  # padding

    # Uneven shards: the first (vocab % world) ranks get one column more.
    widths = [vocab // world + (r < vocab % world) for r in range(world)]
    start = sum(widths[:rank])
    w_shard = weight[:, start : start + widths[rank]].clone().requires_grad_(True)

    logits_shard = hidden @ w_shard  # (rows, width_rank): never the full (rows, vocab)
    loss = td.entropy_regularized_cross_entropy(
        logits_shard, target, vocab_start=start, entropy_weight=0.1, label_smoothing=0.1, z_loss_weight=1e-4
    )
    entropy = td.softmax_entropy(logits_shard.detach(), temperature=0.7)
    log_z = td.logsumexp(logits_shard.detach())
    loss.backward()  # w_shard.grad: this rank's slice; no communication
    # (A gradient for `hidden` would be the sum of every rank's part: an all_reduce, as in any
    # tensor-parallel linear layer.)

    w_full = weight.clone().requires_grad_(True)
    full = hidden @ w_full
    ref = thermokern.entropy_regularized_cross_entropy(
        full, target, entropy_weight=0.1, label_smoothing=0.1, z_loss_weight=1e-4
    )
    ref.backward()
    ref_grad = w_full.grad[:, start : start + widths[rank]]
    return {
        "loss": loss.item(),
        "loss_err": abs(loss.item() - ref.item()),
        "entropy_err": float(
            (entropy - thermokern.softmax_entropy(full.detach(), temperature=0.7)).abs().max()
        ),
        "log_z_err": float((log_z - torch.logsumexp(full.detach(), -1)).abs().max()),
        "grad_err": float((w_shard.grad - ref_grad).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    device = args.device
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")  # env:// from torchrun
    try:
        errs = run(device)
        if dist.get_rank() == 0:
            print(
                f"world {dist.get_world_size()}: loss {errs['loss']:.6f}; max |difference| from one "
                f"device: loss {errs['loss_err']:.2e}, entropy {errs['entropy_err']:.2e}, "
                f"log Z {errs['log_z_err']:.2e}, weight gradient {errs['grad_err']:.2e}"
            )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
