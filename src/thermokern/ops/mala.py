"""Metropolis-adjusted Langevin: ``mala_step``, its fused accept/reject ``mala_accept``, the
proposal ``mala_proposal`` and the kernel declarations.

The schemas of ``mala_accept`` and ``mala_proposal`` are in csrc/thermokern.cpp ([Note: MALA
acceptance] in csrc/include/thermokern/mala.h, [Note: per-chain MALA parameters] in
csrc/thermokern.cpp); the
CPU and CUDA kernels register under them, the Triton launchers are in kernels/mala.py. With one
step size and temperature for every chain the proposal is :func:`thermokern.langevin_step`'s
kernel; with one per chain, ``mala_proposal``'s. The energy gradients come from
``torch.autograd.grad``. Nothing here is differentiable: a MALA step is a
sampler update (its outputs never require grad).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from thermokern import _backend, reference
from thermokern._checks import check_chain_param, check_chains, check_float_tensor, rng_tensor
from thermokern._dispatch import KernelOp
from thermokern._dtypes import acc_dtype
from thermokern.ops.langevin import langevin_args, langevin_step_fwd

__all__ = [
    "checked_accept",
    "checked_proposal",
    "energy_and_grad",
    "mala_accept",
    "mala_counters",
    "mala_proposal",
    "mala_step",
]


# ----------------------------------------------------------------------------- kernel
def _accept_fake(
    x, x_prop, grad, grad_prop, energy, energy_prop, seed, offset, step_size, temperature,
    chain_step_size=None, chain_temperature=None,
):  # fmt: skip
    torch._check(x.dim() >= 1, lambda: "x: expected at least 1 dimension (dim 0 indexes chains)")
    chains = x.shape[0]
    return (
        x.new_empty(x.shape),
        x.new_empty((chains,), dtype=torch.bool),
        x.new_empty((chains,), dtype=acc_dtype(x.dtype)),
    )


mala_accept_kernel = KernelOp("mala_accept", fake=_accept_fake, triton="mala")


def _proposal_fake(x, grad, seed, offset, step_size, temperature):
    torch._check(x.dim() >= 1, lambda: "x: expected at least 1 dimension (dim 0 indexes chains)")
    return x.new_empty(x.shape)


mala_proposal_kernel = KernelOp("mala_proposal", fake=_proposal_fake, triton="mala")


# ----------------------------------------------------------------------------- helpers
def mala_counters(x: torch.Tensor | tuple[int, ...] | torch.Size) -> int:
    """Philox counters one :func:`mala_step` on ``x`` (or a tensor of this shape) uses.

    ``ceil(numel / 4)`` for the proposal's noise plus ``ceil(chains / 4)`` for the accept
    tests. Advance ``offset`` by this (or, simpler, by ``numel + chains``) between steps.
    """
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(x)
    if len(shape) == 0:
        raise ValueError("x: expected at least 1 dimension (dim 0 indexes chains), got a 0-dim shape")
    return reference.mala_counters(math.prod(shape), shape[0])


def energy_and_grad(
    energy_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, name: str = "energy_fn"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E(x), dE/dx)`` for a batch of chains (dim 0 of ``x``), both detached.

    ``energy_fn`` (called ``name`` in error messages) gets a leaf copy of ``x`` that requires grad (grad mode on, whatever the
    caller's mode) and must return one energy per chain, shape ``(chains,)``. The gradient is
    ``torch.autograd.grad(E.sum(), x)``: parameters of ``energy_fn`` get no ``.grad``.

    Returns:
        The energies in the accumulation dtype of ``x`` (float32; float64 for float64) and
        the gradient in x's dtype and shape.

    Raises:
        TypeError: ``energy_fn`` is not callable or returns no floating-point tensor.
        ValueError: the energies do not have shape ``(chains,)`` or are on another device.
        RuntimeError: the energies do not depend on ``x`` through autograd.
    """
    if not callable(energy_fn):
        raise TypeError(f"{name}: expected a callable x -> energies, got {type(energy_fn).__name__}")
    chains = x.shape[0]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        e = energy_fn(xr)
        if not isinstance(e, torch.Tensor) or not e.is_floating_point():
            what = f"a {e.dtype} tensor" if isinstance(e, torch.Tensor) else type(e).__name__
            raise TypeError(f"{name}: expected a floating-point tensor of energies, got {what}")
        if tuple(e.shape) != (chains,):
            hint = " (squeeze the last dimension)" if tuple(e.shape) == (chains, 1) else ""
            raise ValueError(
                f"{name}: expected one energy per chain, shape ({chains},) for x of shape "
                f"{tuple(x.shape)}, got shape {tuple(e.shape)}{hint}"
            )
        if e.device != x.device:
            raise ValueError(f"{name}: expected energies on {x.device} (x's device), got {e.device}")
        if not e.requires_grad:
            raise RuntimeError(
                f"{name}: its output does not depend on x through autograd (computed under "
                "torch.no_grad(), detached, or constant?); the sampler needs dE/dx"
            )
        (g,) = torch.autograd.grad(e.sum(), xr, allow_unused=True)
    if g is None:  # depends on parameters only: a flat energy in x
        g = torch.zeros_like(x)
    # (contiguous: the gradient of e.g. c * x.sum() is an expanded view, and samplers write
    # into the gradients they keep)
    return e.detach().to(acc_dtype(x.dtype)), g.detach().to(x.dtype).contiguous()


def _chain_tensors(x: torch.Tensor, eta, t):
    """(eta, T) as mala_proposal takes them ([Note: per-chain MALA parameters] in
    csrc/thermokern.cpp): each a (chains,) tensor as given or a 1-element tensor of the number
    (a fill kernel, no host copy), in the accumulation dtype; None when both are numbers (the
    proposal is then langevin_step's kernel)."""
    if not isinstance(eta, torch.Tensor) and not isinstance(t, torch.Tensor):
        return None
    acc = acc_dtype(x.dtype)
    return tuple(
        v if isinstance(v, torch.Tensor) else torch.full((1,), v, dtype=acc, device=x.device)
        for v in (eta, t)
    )


# ----------------------------------------------------------------------------- public API
def mala_proposal(
    x: torch.Tensor,
    grad: torch.Tensor,
    *,
    step_size: float | torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
) -> torch.Tensor:
    """The Langevin proposal ``x' = x - eta dE/dx + sqrt(2 eta T) xi`` of a MALA step, where
    ``eta`` and ``T`` may be one value per chain (tensors of shape ``(chains,)``).

    With numbers this is :func:`thermokern.langevin_step`; with per-chain values it is the
    kernel ``mala_proposal`` ([Note: per-chain MALA parameters] in csrc/thermokern.cpp), drawing
    the same noise ``xi`` at ``(seed, offset)``. Not differentiable (a sampler update).
    """
    check_chains(x)
    grad, _, _, _, _, seed_t, offset_t = langevin_args(x, grad, 1.0, 1.0, None, None, None, seed, offset)
    eta = check_chain_param(step_size, "step_size", x)
    t = check_chain_param(temperature, "temperature", x)
    return checked_proposal(x, grad, eta, t, seed_t, offset_t, _backend.resolve_backend(backend, x))


def checked_proposal(x, grad, eta, t, seed_t, offset_t, name: str) -> torch.Tensor:
    """:func:`mala_proposal` with every argument already checked (grad in x's dtype and shape,
    seed and offset tensors, the backend resolved): what the samplers call every step."""
    with torch.no_grad():
        x, grad = x.detach(), grad.detach()
        chain = _chain_tensors(x, eta, t)
        if chain is None:
            sigma = reference.langevin_noise_std(eta, t, None)
            return langevin_step_fwd(name, x, grad, seed_t, offset_t, eta, sigma, None, None, None)
        return mala_proposal_kernel(name, x, grad, seed_t, offset_t, *chain)


def mala_accept(
    x: torch.Tensor,
    x_prop: torch.Tensor,
    grad: torch.Tensor,
    grad_prop: torch.Tensor,
    energy: torch.Tensor,
    energy_prop: torch.Tensor,
    *,
    step_size: float | torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused accept/reject of a MALA step (the kernel behind :func:`mala_step`).

    One pass per chain (dim 0) reduces over its elements
    ``S = sum (2 (x - x') + eta (g' - g)) (g + g')``, which equals
    ``4 T (log q(x' | x) - log q(x | x'))`` without subtracting two large squared norms, forms
    ``log alpha = -((E' - E) + S / 4) / T``, draws the chain's uniform and writes ``x'`` or
    ``x`` into ``x_new``. ``(seed, offset)`` are the *step's*: the uniform of chain ``c`` is
    word ``c % 4`` of Philox counter ``offset + ceil(x.numel() / 4) + c // 4``, right after
    the counters of the proposal drawn at the same ``(seed, offset)``.

    Args:
        x: current states, float32/64/16/bf16, dim 0 indexes chains.
        x_prop: the proposals, x's shape (cast to x's dtype).
        grad, grad_prop: dE/dx at ``x`` and at ``x_prop`` (cast to x's dtype).
        energy, energy_prop: (chains,) energies (cast to the accumulation dtype).
        step_size, temperature: eta > 0 and T > 0 of the proposal: numbers, or tensors of one
            value per chain, shape ``(chains,)`` ([Note: per-chain MALA parameters] in
            csrc/thermokern.cpp).
        seed, offset: the step's Philox key and first counter (ints or 0-dim int64 tensors on
            x's device).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``.

    Returns:
        ``(x_new, accepted, log_alpha)``: x_new contiguous (x's shape and dtype), accepted
        (chains,) bool, log_alpha (chains,) in the accumulation dtype. A NaN log alpha rejects.
    """
    check_chains(x)
    chains = x.shape[0]
    ts = {"x_prop": x_prop, "grad": grad, "grad_prop": grad_prop}
    for name, t in ts.items():
        check_float_tensor(t, name)
        if t.shape != x.shape:
            raise ValueError(f"{name}: expected x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on {x.device} (x's device), got {t.device}")
    acc = acc_dtype(x.dtype)
    es = {"energy": energy, "energy_prop": energy_prop}
    for name, t in es.items():
        check_float_tensor(t, name)
        if tuple(t.shape) != (chains,):
            raise ValueError(
                f"{name}: expected one energy per chain, shape ({chains},), got {tuple(t.shape)}"
            )
        if t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on {x.device} (x's device), got {t.device}")
    eta = check_chain_param(step_size, "step_size", x)
    t = check_chain_param(temperature, "temperature", x)
    seed_t = rng_tensor(seed, "seed", x.device)
    offset_t = rng_tensor(offset, "offset", x.device)
    x, x_prop, grad, grad_prop = (v.detach() for v in (x, x_prop, grad, grad_prop))
    x_prop, grad, grad_prop = (v.to(x.dtype) for v in (x_prop, grad, grad_prop))
    energy, energy_prop = energy.detach().to(acc), energy_prop.detach().to(acc)
    name = _backend.resolve_backend(backend, x)
    return checked_accept(x, x_prop, grad, grad_prop, energy, energy_prop, eta, t, seed_t, offset_t, name)


def checked_accept(x, x_prop, grad, grad_prop, energy, energy_prop, eta, t, seed_t, offset_t, name: str):
    """:func:`mala_accept` with every argument already checked and converted (x_prop, the
    gradients in x's dtype, the energies in its accumulation dtype, seed and offset tensors,
    the backend resolved): what the samplers call every step."""
    # A per-chain tensor goes in as chain_step_size / chain_temperature (the number beside it is
    # then unused), a number as itself.
    chain = tuple(v if isinstance(v, torch.Tensor) else None for v in (eta, t))
    numbers = tuple(1.0 if isinstance(v, torch.Tensor) else v for v in (eta, t))
    with torch.no_grad():
        return mala_accept_kernel(
            name, x, x_prop, grad, grad_prop, energy, energy_prop, seed_t, offset_t, *numbers, *chain
        )


def mala_step(
    x: torch.Tensor,
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    step_size: float | torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    seed: int | torch.Tensor,
    offset: int | torch.Tensor = 0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Metropolis-adjusted Langevin (MALA) step targeting ``p(x) ∝ exp(-E(x) / T)``.

    Dim 0 of ``x`` indexes independent chains; ``energy_fn(x)`` returns one energy per chain,
    shape ``(chains,)``. The step:

      1. ``E(x)`` and ``g = dE/dx`` by autograd (:func:`energy_and_grad`);
      2. the proposal ``x' = x - eta g + sqrt(2 eta T) xi`` by :func:`thermokern.langevin_step`
         at ``(seed, offset)``;
      3. ``E(x')`` and ``g' = dE/dx'``;
      4. the fused accept/reject (:func:`mala_accept`, one kernel: per chain the proposal
         log-densities ``log q(a | b) = -|a - b + eta dE/db|^2 / (4 eta T)``, ``log alpha =
         -(E(x') - E(x)) / T + log q(x | x') - log q(x' | x)``, a uniform ``u``, accept when
         ``log u <= log alpha``, and the chain's row of the result).

    Random numbers (Philox4x32-10, key ``seed``; [Note: MALA acceptance] in
    csrc/include/thermokern/mala.h): with ``n = x.numel()`` and ``C = x.shape[0]``, the
    proposal's noise uses the counters ``offset .. offset + ceil(n / 4) - 1`` (exactly
    ``langevin_step``'s layout), and chain ``c``'s uniform is word ``c % 4`` of counter
    ``offset + ceil(n / 4) + c // 4``. One step thus uses :func:`mala_counters` ``(x) =
    ceil(n / 4) + ceil(C / 4)`` counters: advance ``offset`` by that (or by ``n + C``)
    between steps and no two steps share random numbers. The same ``(seed, offset)`` gives
    the same proposal noise and uniforms on every backend; the decisions agree unless
    ``log u`` and ``log alpha`` differ by float rounding (~1e-6 relative in float32).

    Not differentiable: ``x_new`` and ``accepted`` never require grad (the step runs under
    ``torch.no_grad()`` except for the two gradient evaluations, which use
    ``torch.autograd.grad`` w.r.t. ``x`` only, so parameters of ``energy_fn`` get no ``.grad``).
    A sampler that steps repeatedly should cache ``E`` and ``dE/dx`` of the accepted state
    (``thermokern.sampling.langevin_sample(metropolis=True)`` does: one energy evaluation per
    step instead of two).

    Args:
        x: float32/64/16/bf16 tensor, at least 1-D (dim 0: chains). 16-bit inputs compute in
            float32.
        energy_fn: ``x -> (chains,)`` differentiable energies.
        step_size: eta > 0, or a tensor of one step size per chain, shape ``(chains,)``
            ([Note: per-chain MALA parameters] in csrc/thermokern.cpp).
        temperature: T > 0, or one temperature per chain (a ``(chains,)`` tensor).
        seed: Philox key, an int or a 0-dim int64 tensor on x's device.
        offset: first counter, an int >= 0 or a 0-dim int64 tensor on x's device.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"`` (the
            proposal and the accept kernel both use it).

    Returns:
        ``(x_new, accepted)``: x_new contiguous (x's shape and dtype), accepted (chains,) bool.

    Raises:
        TypeError: non-float ``x``; non-callable ``energy_fn``; non-numeric arguments.
        ValueError: 0-dim ``x``; step_size or temperature <= 0 or non-finite; energies of a
            shape other than ``(chains,)``; bad seed/offset.
        RuntimeError: energies that do not depend on ``x`` through autograd; an unavailable
            backend.

    Example:
        >>> import torch, thermokern
        >>> x = torch.zeros(4096, 2)
        >>> x, acc = thermokern.mala_step(x, lambda x: 0.5 * x.square().sum(1), step_size=0.5, seed=0)
        >>> x.shape, acc.dtype
        (torch.Size([4096, 2]), torch.bool)
    """
    check_chains(x)
    eta = check_chain_param(step_size, "step_size", x)
    t = check_chain_param(temperature, "temperature", x)
    seed_t = rng_tensor(seed, "seed", x.device)
    offset_t = rng_tensor(offset, "offset", x.device)
    name = _backend.resolve_backend(backend, x)
    x = x.detach()
    energy, grad = energy_and_grad(energy_fn, x)
    # Everything is checked above (once: a per-chain tensor's check reads values back on CUDA)
    # and energy_and_grad gives the energies and gradients in the kernels' dtypes.
    x_prop = checked_proposal(x, grad, eta, t, seed_t, offset_t, name)
    energy_prop, grad_prop = energy_and_grad(energy_fn, x_prop)
    x_new, accepted, _ = checked_accept(
        x, x_prop, grad, grad_prop, energy, energy_prop, eta, t, seed_t, offset_t, name
    )
    return x_new, accepted
