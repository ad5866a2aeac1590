"""Optimizers: :class:`SGLD`, stochastic-gradient Langevin dynamics with fused noise."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from thermokern import _backend
from thermokern._checks import check_int, check_nonnegative, check_positive
from thermokern._dtypes import FLOAT_DTYPES
from thermokern.ops.sgld import sgld_step_

__all__ = ["SGLD"]

_U64 = 2**64
_I63 = 2**63


def _check_hparams(lr: object, temperature: object, weight_decay: object, where: str = "") -> tuple:
    """(lr, temperature, weight_decay) as floats; ValueError/TypeError naming the bad one."""
    return (
        check_positive(lr, where + "lr"),
        check_positive(temperature, where + "temperature"),
        check_nonnegative(weight_decay, where + "weight_decay"),
    )


def _u64(value: object, name: str, low: int) -> int:
    """An int in [low, 2**64) as its 64-bit pattern in [0, 2**64)."""
    v = check_int(value, name)
    if not low <= v < _U64:
        raise ValueError(f"{name}: expected an int in [{low}, 2**64), got {v}")
    return v % _U64


def _i64(v: int) -> int:
    """A value in [0, 2**64) as the int64 with the same bits."""
    return v - _U64 if v >= _I63 else v


class SGLD(torch.optim.Optimizer):
    r"""Stochastic-gradient Langevin dynamics (Welling & Teh, 2011), one fused kernel per step.

    Each step updates every parameter ``p`` with a gradient by

    .. math::
        p \leftarrow p - \eta\,(\nabla L + \lambda p) + \sqrt{2 \eta T}\,\xi,
        \qquad \xi \sim \mathcal N(0, I),

    i.e. :func:`thermokern.langevin_step` with ``step_size = lr`` (``η``) applied to the
    gradient plus weight decay ``λ``. For small ``lr`` the iterates sample
    ``p(θ) ∝ exp(-(L(θ) + λ|θ|²/2) / T)``. All parameters of one param group that share a
    device and dtype are updated by one kernel launch (one parallel region on CPU) that reads
    each parameter and gradient once and generates the noise inside the kernel: no noise
    tensor, no per-tensor launches.

    Conventions:
      * Welling & Teh write ``Δθ = (ε/2) ∇log p(θ | data) + N(0, ε)``: that is this update with
        ``L = -log p(θ | data)``, ``T = 1`` and ``ε = 2 * lr``; to reproduce a step size ``ε``
        from the paper, pass ``lr = ε / 2``.
      * ``L`` is the *sum* over the N data points (a mini-batch mean times N). With the usual
        mean loss ``L / N``, pass ``temperature = 1 / N`` to sample the posterior (``T = 1``
        on the mean loss samples the posterior tempered by N).
      * ``weight_decay = λ`` is a Gaussian prior of precision ``λ`` (on the same scale as
        ``L``): it adds ``λ p`` to the gradient, as ``torch.optim.SGD`` does (coupled decay).

    Noise: Philox4x32-10 keyed by ``seed``, with langevin_step's noise math (bit-identical
    uniforms on every backend, normals within 1e-6 relative). The counter layout of a step:
    the parameters of all param groups are laid end to end in the order of
    ``param_groups``, then of each group's ``params``; parameter k takes
    ``ceil(numel_k / 4)`` counters starting at ``start_k = Σ_{j<k} ceil(numel_j / 4)``, so its
    element ``e`` (row-major logical order, whatever the strides) uses word ``e % 4`` of counter
    ``offset + start_k + e // 4``: exactly ``langevin_step(p, grad + λ p, step_size=lr,
    temperature=T, seed=seed, offset=offset + start_k)``. A parameter whose ``grad`` is None is
    skipped but keeps its counters (positions, not the set of parameters with gradients,
    decide every parameter's noise), and a group added later goes after the existing ones.
    After each step the running ``offset`` advances by the step's total counter count
    ``C = Σ_k ceil(numel_k / 4)``, so no two steps share noise; it starts at 0 and is exposed
    as :attr:`noise_offset`.

    State: :meth:`state_dict` holds, besides the usual ``state`` (empty: SGLD keeps no
    per-parameter buffers) and ``param_groups``, an entry ``"rng": {"seed": int, "offset":
    int}`` (Python ints, device-independent); :meth:`load_state_dict` restores both, so a
    restored optimizer continues with bit-identical noise. Reading the offset of a CUDA
    optimizer synchronises with the device (once per ``state_dict()``).

    Args:
        params: parameters or param groups (dicts) as for any ``torch.optim.Optimizer``;
            float32, float64, float16 or bfloat16. Groups may override ``lr``,
            ``temperature`` and ``weight_decay``.
        lr: the step size ``η > 0`` (``ε / 2`` in Welling & Teh's notation).
        temperature: ``T > 0``; the noise standard deviation is ``sqrt(2 lr T)``.
        weight_decay: ``λ >= 0``, added to the gradient as ``λ p``.
        seed: the Philox key, an int in ``[-2**63, 2**64)`` (its 64-bit pattern is used).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"`` (the last:
            per-tensor pure PyTorch, for testing).

    Precision: 16-bit parameters compute in float32 (then round to their dtype), float64 in
    float64. Non-contiguous parameters are updated through a contiguous copy that is written
    back (an extra copy for those tensors only).

    Raises:
        ValueError: ``lr <= 0``, ``temperature <= 0``, ``weight_decay < 0`` (or non-finite),
            at construction, in :meth:`add_param_group` and at each step (a scheduler may
            change them); a ``state_dict`` without ``"rng"``.
        TypeError: a non-floating parameter, a non-numeric hyperparameter, a non-int seed.
        RuntimeError: a sparse gradient (:meth:`step`).

    Example:
        >>> import torch, thermokern
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = thermokern.optim.SGLD(model.parameters(), lr=1e-3, temperature=1.0, seed=0)
        >>> model(torch.randn(8, 3)).square().sum().backward()
        >>> opt.step()
        >>> opt.noise_offset  # counters used so far: ceil(3 / 4) + ceil(1 / 4)
        2
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        temperature: float = 1.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        backend: str = "auto",
    ) -> None:
        lr, temperature, weight_decay = _check_hparams(lr, temperature, weight_decay)
        if not isinstance(backend, str) or backend not in (*_backend.BACKENDS, "auto"):
            raise ValueError(
                f"backend: expected 'auto' or one of {', '.join(_backend.BACKENDS)}, got {backend!r}"
            )
        self._seed = _u64(seed, "seed", -_I63)
        self._backend = backend
        # Per device: (seed, offset) as 0-dim int64 tensors there, which the kernels read. All
        # offsets hold the same value; each step advances them in place (no host sync, and a
        # compiled step sees a tensor, not a changing Python constant).
        self._rng: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._first_offset = 0  # the offset of the first device's tensors when created
        defaults = {"lr": lr, "temperature": temperature, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    # ------------------------------------------------------------------------- groups and rng
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (may set its own ``lr``, ``temperature``, ``weight_decay``).

        Its parameters take the counters after those of the existing groups.
        """
        where = f"param_groups[{len(self.param_groups)}]: "
        if isinstance(param_group, dict):  # (the base class rejects anything else)
            hp = {**self.defaults, **param_group}
            _check_hparams(hp["lr"], hp["temperature"], hp["weight_decay"], where)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for i, p in enumerate(group["params"]):
            if p.dtype not in FLOAT_DTYPES:
                self.param_groups.pop()  # leave the optimizer as it was
                raise TypeError(
                    f"{where}params[{i}]: expected a float32, float64, float16 or bfloat16 "
                    f"parameter, got {p.dtype}"
                )
        for p in group["params"]:
            self._rng_tensors(p.device)

    def _rng_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The (seed, offset) tensors on ``device``, created on first use with the others' offset."""
        rng = self._rng.get(device)
        if rng is None:
            if self._rng:
                offset = next(iter(self._rng.values()))[1].to(device, copy=True)
            else:
                offset = torch.tensor(_i64(self._first_offset), dtype=torch.int64, device=device)
            rng = (torch.tensor(_i64(self._seed), dtype=torch.int64, device=device), offset)
            self._rng[device] = rng
        return rng

    @property
    def seed(self) -> int:
        """The Philox key, as an int in [0, 2**64)."""
        return self._seed

    @property
    def noise_offset(self) -> int:
        """The first Philox counter of the next step, an int in [0, 2**64) (reading it from a
        CUDA tensor synchronises with the device)."""
        if not self._rng:
            return self._first_offset
        return int(next(iter(self._rng.values()))[1]) % _U64

    def _set_rng(self, seed: int, offset: int) -> None:
        self._seed = seed
        self._first_offset = offset
        for seed_t, offset_t in self._rng.values():  # in place: tensors keep their identity
            seed_t.fill_(_i64(seed))
            offset_t.fill_(_i64(offset))

    # ------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state with ``"rng": {"seed", "offset"}`` (see the class docstring)."""
        sd = super().state_dict()
        sd["rng"] = {"seed": self._seed, "offset": self.noise_offset}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`, including the seed and the noise offset."""
        sd = dict(state_dict)
        rng = sd.pop("rng", None)
        if not isinstance(rng, dict) or "seed" not in rng or "offset" not in rng:
            raise ValueError(
                "state_dict: expected an 'rng' entry {'seed': int, 'offset': int} as written by "
                "thermokern.optim.SGLD.state_dict(); without it the noise cannot continue"
            )
        seed = _u64(rng["seed"], "state_dict['rng']['seed']", 0)
        offset = _u64(rng["offset"], "state_dict['rng']['offset']", 0)
        super().load_state_dict(sd)
        self._set_rng(seed, offset)

    def __getstate__(self) -> dict[str, Any]:  # pickle / copy.deepcopy
        state = super().__getstate__()
        state["rng"] = {"seed": self._seed, "offset": self.noise_offset}
        state["backend"] = self._backend
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        rng = state.pop("rng", None)
        backend = state.pop("backend", None)
        super().__setstate__(state)
        if rng is not None:  # unpickling (load_state_dict calls this without it)
            self._seed, self._first_offset = rng["seed"], rng["offset"]
            self._backend = backend
            self._rng = {}
            for group in self.param_groups:
                for p in group["params"]:
                    self._rng_tensors(p.device)

    # ------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SGLD step over every parameter with a gradient.

        Args:
            closure: re-evaluates the model and returns the loss (run with grad enabled).

        Returns:
            The closure's loss, or None.

        Raises:
            RuntimeError: a parameter has a sparse gradient.
            ValueError: a group's lr, temperature or weight_decay is out of range.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        start = 0  # the next parameter's first counter, relative to the offset
        for gi, group in enumerate(self.param_groups):
            lr, temperature, wd = _check_hparams(
                group["lr"], group["temperature"], group["weight_decay"], f"param_groups[{gi}]: "
            )
            noise_std = math.sqrt(2.0 * lr * temperature)
            # one launch per (device, dtype) of the group
            buckets: dict[tuple[torch.device, torch.dtype], tuple[list, list, list]] = {}
            for pi, p in enumerate(group["params"]):
                first = start
                start += (p.numel() + 3) // 4
                g = p.grad
                if g is None:
                    continue
                if g.layout != torch.strided:
                    raise RuntimeError(
                        f"SGLD: param_groups[{gi}]['params'][{pi}] has a sparse gradient "
                        f"({g.layout}); SGLD supports dense gradients only"
                    )
                if g.dtype != p.dtype:
                    g = g.to(p.dtype)
                ps, gs, cs = buckets.setdefault((p.device, p.dtype), ([], [], []))
                ps.append(p)
                gs.append(g)
                cs.append(first)
            for (device, _), (ps, gs, cs) in buckets.items():
                seed_t, offset_t = self._rng_tensors(device)
                sgld_step_(
                    ps,
                    gs,
                    lr=lr,
                    noise_std=noise_std,
                    weight_decay=wd,
                    seed=seed_t,
                    offset=offset_t,
                    counter_starts=cs,
                    backend=self._backend,
                )
        for _, offset_t in self._rng.values():
            offset_t.add_(start)
        return loss
