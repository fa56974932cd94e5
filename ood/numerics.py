"""The numerics every part of the package shares, each written once: the energy, the float32 upcast, and running a
network in eval mode for a block.

* :func:`energy` is the Energy-OE energy :math:`E(x) = -T\\log\\sum_c e^{f_c(x)/T}` (Liu et al. 2020, Eq. 1),
  lower for in-distribution inputs. The loss terms (``ood.losses``), GReg+'s sampler (``ood.sampling``) and the
  energy score (``ood.scorers.energy``, which is :math:`-E`, higher = more in-distribution) all call it.
* :func:`wide`: half-precision tensors (bf16 autocast) are widened to float32 before an ``exp``/``log``/norm.
* :func:`eval_mode`: BatchNorm with its running statistics and no dropout for a block, the training flag restored
  afterwards (the scorers, the sampler's pool forward, the accuracy of ``ood.train`` and the tour's figures).
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["wide", "energy", "eval_mode"]


def wide(t: Tensor) -> Tensor:
    """``t`` in float32 if it is half / bfloat16, else unchanged (float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def energy(logits: Tensor, T: float = 1.0) -> Tensor:
    r""":math:`E = -T \log\sum_c \exp(f_c / T)` per row (Liu et al. 2020, Eq. 1); computed in float32 or wider."""
    return -T * torch.logsumexp(wide(logits) / T, dim=1)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run the block in eval mode (BatchNorm running statistics, no dropout) and restore the training flag."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
