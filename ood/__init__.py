"""ood: a thin library for the BFM and GReg/GReg+ companion notebooks.

Conventions used everywhere in the package (see README, "Conventions"):

* Scores: **higher means more in-distribution**. Convert at the edges only.
* Images enter models as float tensors in [0, 1], NCHW; each model normalizes them with the
  ID statistics in its first step (``OODNet.normalize``), so OOD sets share the ID normalization.
* Percentiles are 0-100 (ReAct, ASH, DICE).
* FPR95: fraction of OOD samples scored at or above the threshold that keeps 95% of ID samples
  (ID is the positive class).
"""

__version__ = "0.1.0"
