"""thermokern.distributed checks under torchrun: NCCL across GPUs, or gloo on CPU.

    torchrun --nproc_per_node=$(nvidia-smi -L | wc -l) bench/distributed_check.py   # NCCL, a GPU per rank
    torchrun --nproc_per_node=3 bench/distributed_check.py --device cpu             # gloo

Every rank runs ``check_all`` from tests/test_distributed.py (the checks the gloo tests run:
uneven shards, an empty shard, float32/float64/bfloat16, per-row temperatures, every
cross-entropy term, -inf/+inf/NaN rows, errors) with every backend that serves the device
(cuda, triton and reference on GPUs), comparing values and local gradients with the float64
single-device reference on the full tensor. Rank 0 prints one PASS line; any failure raises
on its rank and torchrun exits non-zero. A few seconds after start-up.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import thermokern

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
check_all = importlib.import_module("test_distributed").check_all  # the checks the tests run


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args()
    kind = args.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = "cpu"
    if kind == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.device_count() <= local_rank:
            raise SystemExit(
                f"distributed_check: rank {local_rank} needs GPU {local_rank}, but only "
                f"{torch.cuda.device_count()} are visible (one GPU per rank for NCCL)"
            )
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=datetime.timedelta(seconds=120))
    try:
        rank = dist.get_rank()
        info = thermokern.available_backends()
        backends = [b for b in ("cpu", "cuda", "triton", "reference") if kind in info[b].devices]
        slow = ("triton",) if kind == "cpu" else ()  # the Triton interpreter
        t0 = time.perf_counter()
        check_all(rank, world, device, backends, slow)
        dist.barrier()
        if rank == 0:
            pg = dist.get_backend()
            print(
                f"distributed_check: PASS ({pg}, world {world}, {device.split(':')[0]}, backends "
                f"{', '.join(backends)}) in {time.perf_counter() - t0:.1f} s"
            )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
