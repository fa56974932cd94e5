"""ood: a thin library for the BFM and GReg/GReg+ companion notebooks.

Conventions used everywhere in the package (see README, "Conventions"):

* Scores: **higher means more in-distribution**. Convert at the edges only.
* Images enter models as float tensors in [0, 1], NCHW; each model normalizes them with the
  ID statistics in its first step (``OODNet.normalize``), so OOD sets share the ID normalization.
* Percentiles are 0-100 (ReAct, ASH, DICE).
* CPU runs pin the instruction set (AVX2) and the thread count at import (:mod:`ood.repro`).
* FPR95: fraction of OOD samples scored at or above the threshold that keeps 95% of ID samples
  (ID is the positive class).
"""

__version__ = "0.1.0"

# Same bits on every x86-64 CPU with AVX2: pin the instruction set and the thread count before any tensor is
# computed (ood/repro.py says what and why; OOD_CPU_ISA=native / OOD_THREADS=native turn it off).
from ood import repro as _repro  # noqa: E402

_repro.pin()
