"""``thermo_stats``: log Z, free energy, mean energy, entropy and heat capacity of the
Boltzmann distribution over the last dimension; the timed output is their sum."""

from __future__ import annotations

import torch

import thermokern
from thermokern import reference

from ..providers import Provider, standard_providers
from ..registry import register
from ._rows import LOGIT_SCALE, partition_shapes, row_reference_chunks, row_spec

TEMPERATURE = 1.0


def eager(e: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """What one writes in PyTorch: log Z, then p, then U, S and C as further reductions."""
    z = -e.float() / temperature
    log_z = torch.logsumexp(z, -1)
    p = torch.softmax(z, -1)
    u = (p * e).sum(-1)
    f = -temperature * log_z
    s = (u - f) / temperature
    c = (p * (e - u.unsqueeze(-1)).square()).sum(-1) / temperature**2
    return (log_z + f + u + s + c).to(e.dtype)


def _thermokern(x: torch.Tensor, backend: str) -> torch.Tensor:
    st = thermokern.thermo_stats(x, -1, temperature=TEMPERATURE, backend=backend)
    return st.log_z + st.free_energy + st.mean_energy + st.entropy + st.heat_capacity


def providers(device: str) -> tuple[list[Provider], list[str]]:
    provs, notes = standard_providers(device, _thermokern, eager)
    notes.append(
        "thermo_stats: every provider computes all five statistics; the timed output (checked "
        "against float64) is their sum log Z + F + U + S + C"
    )
    return provs, notes


def reference_chunks(x: torch.Tensor, grad: torch.Tensor | None, mode: str):
    return row_reference_chunks(
        x, grad, mode, lambda chunk, rows: sum(reference.thermo_stats(chunk, -1, temperature=TEMPERATURE))
    )


SPEC = register(
    row_spec(
        "thermo_stats",
        providers,
        reference_chunks,
        partition_shapes,
        {
            "dim": -1,
            "temperature": TEMPERATURE,
            "energy": f"randn * {LOGIT_SCALE}",
            "output": "log_z + free_energy + mean_energy + entropy + heat_capacity",
        },
    )
)
