"""The private names that :mod:`thermokern.sampling` takes from the rest of thermokern, in one place.

Each of them is an implementation detail of its home module, so a change there shows up here
first: the other modules of the package import them from this one, never from their source.

* ``_backend`` (the module): ``resolve_backend`` picks a step's kernel backend (langevin).
* ``check_float_tensor`` from :mod:`thermokern.ops._checks`: the floating-tensor check of
  ``x0`` (langevin).
* ``_parse`` and ``_checked_step_`` from :mod:`thermokern.ops.langevin`: a ULA run checks
  ``langevin_step_``'s arguments once, then calls the checked in-place step every step
  (langevin).
* ``_proposal_backend`` from :mod:`thermokern.ops.mala`: the ``langevin_step`` backend of a MALA
  proposal (langevin).
* ``_group_rank_world`` from :mod:`thermokern.distributed`: a process's rank, which picks its
  noise stream (streams).
"""

from __future__ import annotations

from thermokern import _backend
from thermokern.distributed import _group_rank_world
from thermokern.ops._checks import check_float_tensor
from thermokern.ops.langevin import _checked_step_, _parse
from thermokern.ops.mala import _proposal_backend

__all__ = [
    "_backend",
    "_checked_step_",
    "_group_rank_world",
    "_parse",
    "_proposal_backend",
    "check_float_tensor",
]
