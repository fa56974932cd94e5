"""Timing and peak memory of a training loop, for ``train_speed.py`` (ours and the authors' loop alike)."""
from __future__ import annotations

import gc
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


def forever(loader):
    """Endless batches of a re-iterable loader (a new epoch, re-shuffled, each time it runs out)."""
    while True:
        yield from loader


def now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _rss_kib(field_name: str) -> int | None:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``, ``VmHWM``), None where it cannot be read."""
    try:
        m = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), flags=re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _malloc_trim() -> None:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere), so that the RSS at
    the start of a loop counts live memory only, not what an earlier loop freed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Context manager measuring the peak memory of a block: CUDA ``max_memory_allocated`` (after resetting it),
    or on the CPU the peak RSS above the RSS at entry (freed C heap returned to the OS first, then
    ``/proc/self/clear_refs`` resets the kernel's peak).
    After the block ``bytes`` holds the value, or None with the reason in ``note``."""

    def __init__(self, device: torch.device):
        """Measure on ``device``."""
        self.device, self.bytes, self.note, self._base = device, None, "", None

    def __enter__(self):
        """Free what can be freed and reset the peak counter."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _malloc_trim()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
            self._base = _rss_kib("VmRSS")
        except OSError as e:
            self.note = f"n/a (peak RSS cannot be reset here: {type(e).__name__})"
        if self._base is None and not self.note:
            self.note = "n/a (/proc/self/status has no VmRSS here)"
        return self

    def __exit__(self, *exc):
        """Read the peak."""
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._base is not None:
            peak = _rss_kib("VmHWM")
            if peak is None:
                self.note = "n/a (/proc/self/status has no VmHWM here)"
            else:
                self.bytes = max(0, peak - self._base) * 1024
        return False


@dataclass
class LoopResult:
    """Timing of one loop (ours or the reference) for one method on one device."""

    seconds_per_step: float
    peak_bytes: int | None
    peak_note: str = ""
    sampling_seconds_per_step: float | None = None   # GReg+ only: the sampler's time per step (instrumented pass)
    sampling_share: float | None = None              # its fraction of the step time in that pass
    workers: int | None = None                       # reference: DataLoader workers used
    notes: list[str] = field(default_factory=list)


def time_loop(step, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of ``step()`` over ``steps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    t0 = now(device)
    for _ in range(steps):
        step()
    return (now(device) - t0) / steps


def sampling_pass(step, timer: dict, device: torch.device, steps: int) -> tuple[float, float]:
    """``(sampling seconds per step, sampling share)`` over ``steps`` instrumented calls of ``step()``; the step
    adds its sampling time to ``timer["seconds"]``."""
    timer["seconds"] = 0.0
    t0 = now(device)
    for _ in range(steps):
        step()
    total = now(device) - t0
    return timer["seconds"] / steps, timer["seconds"] / total


class TimedSampler:
    """Delegates ``select`` to a sampler and adds its wall time (device synchronised) to ``timer["seconds"]``."""

    def __init__(self, inner, device: torch.device, timer: dict):
        """Wrap ``inner``; times go to ``timer["seconds"]``."""
        self.inner, self.device, self.timer = inner, device, timer
        self.pool_factor = inner.pool_factor

    def select(self, model, candidates, n_out, generator=None):
        """The inner sampler's ``select``, timed."""
        t0 = now(self.device)
        pick = self.inner.select(model, candidates, n_out, generator)
        self.timer["seconds"] += now(self.device) - t0
        return pick
