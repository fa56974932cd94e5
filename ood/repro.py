"""Bit-reproducible CPU runs: the instruction set and the thread count every process of the package computes with.

PyTorch picks its CPU kernels by the instruction set and the vendor of the machine (ATen's vectorized kernels,
oneDNN's convolutions, MKL's matrix products), and the order of floating-point sums changes with the kernel and with
the number of threads. On two 2-core x86 CPUs of this project's kind, one with AVX-512 and one with AVX2 only, the same
seed trained CE to 98.80% and 97.90% test accuracy, and the methods' ranking flipped. Pinning removes that:

* ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels, also on an AVX-512 CPU;
* ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's convolutions no wider than AVX2;
* ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility (CNR) mode on its SSE2 branch, the one branch
  besides ``AUTO`` that MKL honours on non-Intel CPUs (oneMKL Developer Guide, "Specifying Code Branches": settings
  other than AUTO or COMPATIBLE are available only for Intel processors, and an unavailable branch silently falls back
  to AUTO). ``MKL_CBWR=AVX2``, used before, ran MKL's AVX2 branch on an Intel Xeon and its AUTO branch on an AMD
  EPYC, and the synthetic pipeline's CE came out with other bits on the two (measured: ``benchmarks/README.md``).
  In training MKL computes only the linear head (convolutions are oneDNN's), so the SSE2 branch costs little there;
* a fixed thread count (:data:`THREADS`, 2): a convolution's weight gradient sums over the batch in per-thread
  chunks, so 1, 2 and 4 threads give three different trainings (measured: ``benchmarks/README.md``).

All three libraries read their variable when they first compute, not at ``import torch``, so :func:`pin` works as
long as it runs before the first tensor operation. It runs when ``ood`` is imported, in the notebook runner
(``ood.nbrun``, whose kernels inherit the environment) and in ``conftest.py``; a notebook imports ``ood`` in its
first cell.

What it does not cover: CPUs without AVX2 or of other architectures (ARM, e.g. Apple silicon; the pinning is
skipped there and the numbers differ), CUDA (other kernels; not bit-reproducible between GPU models), and oneDNN's
blocking choices, which read the CPU's cache sizes: we know of no case where they moved a bit, but they are the one
vendor- or model-dependent choice left unpinned.
``OOD_CPU_ISA=native`` turns the instruction-set pinning off and ``OOD_THREADS=native`` the thread pinning (all
cores: faster on a large machine, other bits).
"""
from __future__ import annotations

import os
import platform
import sys

__all__ = ["ISA_ENV", "THREADS", "pin", "pinned", "state"]

#: The variables that pin PyTorch's CPU kernels: ATen and oneDNN to AVX2, MKL to its vendor-neutral CNR branch (set
#: only on an x86-64 CPU that has AVX2).
ISA_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
#: The thread count of every pinned process: this project's machines have 2 cores.
THREADS = 2


def _has_avx2() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " avx2 " in f" {line.split(':', 1)[1].strip()} "
    except OSError:  # not Linux: the flags are not readable without a new dependency; do not pin
        return False
    return False


def pinned(environ=None) -> dict[str, str]:
    """The variables :func:`pin` sets in ``environ`` (default ``os.environ``) on this machine."""
    environ = os.environ if environ is None else environ
    out = {}
    if environ.get("OOD_CPU_ISA", "avx2").lower() != "native" and _has_avx2():
        out.update(ISA_ENV)
    threads = environ.get("OOD_THREADS", str(THREADS))
    if threads.lower() != "native":
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"OOD_THREADS={threads!r}: set a thread count >= 1, or 'native' for every core")
        out.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return out


def pin(environ=None) -> dict[str, str]:
    """Set the pinning variables in ``environ`` (default ``os.environ``, overriding what is there) and, when torch is
    already imported in this process, its thread count. Returns what was set."""
    target = os.environ if environ is None else environ
    values = pinned(target)
    target.update(values)
    if environ is None and "torch" in sys.modules and "OMP_NUM_THREADS" in values:
        import torch

        if torch.get_num_threads() != int(values["OMP_NUM_THREADS"]):
            torch.set_num_threads(int(values["OMP_NUM_THREADS"]))
    return values


def state() -> dict[str, str]:
    """What this process computes with (for provenance): torch's CPU capability, its threads, the variables."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": str(torch.get_num_threads()),
            **{k: os.environ.get(k, "") for k in ISA_ENV}}
