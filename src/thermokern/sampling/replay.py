"""``ReplayBuffer``: the persistent chains of persistent contrastive divergence (PCD).

The buffer keeps its samples on their device and draws every random number from its own
generator, seeded per noise stream (rank) by :func:`~thermokern.sampling.stream_seed`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from thermokern._checks import check_int, check_real
from thermokern.sampling.streams import _resolve_stream, stream_seed

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Persistent chains for PCD training of energy-based models, kept on one device.

    The buffer holds ``capacity`` samples of shape ``sample_shape``, initialised uniformly in
    ``[low, high)`` (so it can be sampled from the start, as in JEM). :meth:`sample` draws
    ``n`` of them uniformly with replacement, replacing each by fresh uniform noise with
    probability ``reinit_prob``, and returns their slot indices; after refining the samples
    (e.g. with :func:`langevin_sample`) :meth:`update` writes them back into those slots.
    :meth:`push` inserts new samples in ring-buffer order (e.g. to seed the buffer). All
    random draws use the buffer's own ``torch.Generator`` on its device (seeded by ``seed``):
    nothing touches the global RNG and nothing leaves the device.

    Sharded (one buffer per rank under torch.distributed): the generator is seeded with
    :func:`stream_seed` ``(seed, r)`` = ``(seed + r * 0x9E3779B97F4A7C15) mod 2**64`` for
    stream ``r`` (the rank in ``group`` by default), so the ranks' initial and reinitialised
    rows differ; :meth:`gather` concatenates all ranks' buffers.

    Example (one PCD iteration)::

        x, idx = buffer.sample(128)
        x = sampling.langevin_sample(model, x, n_steps=20, step_size=1.0, noise_scale=0.01,
                                     clamp=(-1, 1), seed=it)
        buffer.update(idx, x)
        loss = model(data).mean() - model(x).mean()

    Args:
        capacity: number of samples (> 0).
        sample_shape: shape of one sample (an int or a tuple).
        reinit_prob: probability in [0, 1] that a drawn sample is replaced by fresh noise.
        low, high: bounds of the uniform noise (finite, low < high).
        device: where the buffer lives (default: ``torch.get_default_device()``).
        seed: seed of the buffer's generator (of stream 0; see above).
        dtype: floating dtype of the samples (default: ``torch.get_default_dtype()``).
        stream: the stream; None: this process's rank in ``group`` when torch.distributed
            is initialised, else the single-process seed.
        group: the process group whose rank picks the stream (None: the default group).
    """

    def __init__(
        self,
        capacity: int,
        sample_shape: int | Sequence[int],
        *,
        reinit_prob: float = 0.05,
        low: float = -1.0,
        high: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        stream: int | None = None,
        group: Any = None,
    ):
        if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity <= 0:
            raise ValueError(f"capacity: expected an int > 0, got {capacity!r}")
        if isinstance(sample_shape, numbers.Integral):
            sample_shape = (int(sample_shape),)
        if isinstance(sample_shape, (str, bytes)):
            raise TypeError(f"sample_shape: expected an int or a tuple of ints, got {sample_shape!r}")
        try:
            shape = tuple(int(d) for d in sample_shape)
        except (TypeError, ValueError):
            raise TypeError(
                f"sample_shape: expected an int or a tuple of ints, got {sample_shape!r}"
            ) from None
        if any(d < 0 for d in shape):
            raise ValueError(f"sample_shape: expected non-negative sizes, got {shape}")
        p = check_real(reinit_prob, "reinit_prob")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"reinit_prob: expected a probability in [0, 1], got {p}")
        lo, hi = check_real(low, "low"), check_real(high, "high")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"low, high: expected finite bounds with low < high, got ({lo}, {hi})")
        check_int(seed, "seed")
        self.capacity = int(capacity)
        self.sample_shape = torch.Size(shape)
        self.reinit_prob, self.low, self.high = p, lo, hi
        self.device = torch.device(device) if device is not None else torch.get_default_device()
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {self.dtype}")
        self._gen = torch.Generator(device=self.device)
        self.stream = _resolve_stream(stream, group)
        self._gen.manual_seed(stream_seed(seed, self.stream))
        self._ptr = 0
        self.buffer = self._noise(self.capacity)

    def __len__(self) -> int:
        """The number of samples held: always ``capacity`` (the buffer starts full of noise)."""
        return self.capacity

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(capacity={self.capacity}, sample_shape={tuple(self.sample_shape)}, "
            f"reinit_prob={self.reinit_prob}, low={self.low}, high={self.high}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    def _noise(self, n: int) -> torch.Tensor:
        u = torch.rand((n, *self.sample_shape), generator=self._gen, device=self.device, dtype=torch.float32)
        return (u * (self.high - self.low) + self.low).to(self.dtype)

    def _check_samples(self, x: object, name: str, n: int | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if x.device != self.device:
            raise ValueError(
                f"{name}: expected a tensor on {self.device} (the buffer's device), got {x.device}; "
                "create the buffer with device=... where the samples live"
            )
        if x.dim() == 0 or x.shape[1:] != self.sample_shape or (n is not None and x.shape[0] != n):
            want = f"({n if n is not None else 'n'}, {', '.join(map(str, self.sample_shape))})"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
        return x.detach().to(self.dtype)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` samples: ``(x, idx)``.

        ``idx`` (n,) int64: uniformly random slots (with replacement); ``x`` (n,
        *sample_shape): a copy of those slots, where each row is, with probability
        ``reinit_prob``, fresh uniform noise in ``[low, high)`` instead.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n: expected an int >= 0, got {n!r}")
        n = int(n)
        idx = torch.randint(0, self.capacity, (n,), generator=self._gen, device=self.device)
        x = self.buffer.index_select(0, idx)
        if self.reinit_prob > 0.0:
            fresh = torch.rand(n, generator=self._gen, device=self.device) < self.reinit_prob
            keep = fresh.reshape((n,) + (1,) * len(self.sample_shape))
            x = torch.where(keep, self._noise(n), x)
        return x, idx

    def update(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        """Write samples ``x`` (n, *sample_shape) back into slots ``idx`` (n,) from
        :meth:`sample` (if a slot repeats, one of its rows wins)."""
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.dim() != 1:
            raise TypeError("idx: expected the (n,) int64 tensor of slots that sample() returned")
        if idx.device != self.device:
            raise ValueError(
                f"idx: expected a tensor on {self.device} (the buffer's device), got {idx.device}"
            )
        x = self._check_samples(x, "x", idx.shape[0])
        self.buffer.index_copy_(0, idx, x)

    def push(self, x: torch.Tensor) -> None:
        """Insert samples ``x`` (n, *sample_shape) in ring-buffer order, overwriting the
        oldest insertions (initially the noise); with n > capacity the last capacity rows win."""
        x = self._check_samples(x, "x")
        n = x.shape[0]
        if n == 0:
            return
        if n > self.capacity:
            x = x[n - self.capacity :]
            self._ptr = (self._ptr + n - self.capacity) % self.capacity
            n = self.capacity
        pos = (self._ptr + torch.arange(n, device=self.device)) % self.capacity
        self.buffer.index_copy_(0, pos, x)
        self._ptr = (self._ptr + n) % self.capacity

    def gather(self, group: Any = None) -> torch.Tensor:
        """Every rank's buffer concatenated along dim 0 in rank order (on every rank; a
        collective: call it on all ranks). See :func:`thermokern.distributed.gather_samples`."""
        from thermokern.distributed import gather_samples

        return gather_samples(self.buffer, group=group)

    def state_dict(self) -> dict[str, Any]:
        """The samples, the ring position, the generator state and the settings."""
        return {
            "buffer": self.buffer,
            "ptr": self._ptr,
            "generator": self._gen.get_state(),
            "generator_device": self.device.type,
            "capacity": self.capacity,
            "sample_shape": tuple(self.sample_shape),
            "reinit_prob": self.reinit_prob,
            "low": self.low,
            "high": self.high,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (samples copied to this buffer's device and dtype).

        The settings (reinit_prob, low, high) are restored too. The generator state is
        restored when it comes from the same device type, else it is kept (with a warning).

        Raises:
            ValueError: a buffer of another capacity or sample shape.
        """
        buf = state["buffer"]
        want = (self.capacity, *self.sample_shape)
        if tuple(buf.shape) != want:
            raise ValueError(f"state: expected a buffer of shape {want}, got {tuple(buf.shape)}")
        self.buffer.copy_(buf)
        self._ptr = int(state.get("ptr", 0)) % self.capacity
        self.reinit_prob = float(state.get("reinit_prob", self.reinit_prob))
        self.low = float(state.get("low", self.low))
        self.high = float(state.get("high", self.high))
        if "generator" in state:
            if state.get("generator_device", self.device.type) == self.device.type:
                self._gen.set_state(state["generator"])
            else:
                warnings.warn(
                    f"ReplayBuffer.load_state_dict: the generator state comes from a "
                    f"{state['generator_device']} buffer and cannot seed this {self.device.type} one; "
                    "keeping this buffer's generator",
                    stacklevel=2,
                )
