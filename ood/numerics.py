"""The numerics every part of the package shares, each written once: the energy, the float32 upcast, running a
network in eval mode for a block, and the checks of numeric and choice parameters.

* :func:`energy` is the Energy-OE energy :math:`E(x) = -T\\log\\sum_c e^{f_c(x)/T}` (Liu et al. 2020, Eq. 1),
  lower for in-distribution inputs. The loss terms (``ood.losses``), GReg+'s sampler (``ood.sampling``) and the
  energy score (``ood.scorers.energy``, which is :math:`-E`, higher = more in-distribution) all call it.
* :func:`wide`: half-precision tensors (bf16 autocast) are widened to float32 before an ``exp``/``log``/norm.
* :func:`eval_mode`: BatchNorm with its running statistics and no dropout for a block, the training flag restored
  afterwards (the scorers, the sampler's pool forward, the accuracy of ``ood.train`` and the tour's figures).
* :func:`check_number`, :func:`check_choice`: the one rule and message for a parameter's value (loss terms,
  scorers, samplers, ``TrainConfig``): ``invalid value <v> for <what>; allowed: ...``.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

__all__ = ["wide", "energy", "eval_mode", "is_number", "check_number", "check_choice"]


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


# ---------------------------------------------------------------------------------------------
# Parameter checks: one rule and one message for every number and choice of the package
# ---------------------------------------------------------------------------------------------

def is_number(v) -> bool:
    """A real, finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_number(v, what: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                 integer: bool = False, strict: bool = False, allow_none: bool = False, allow_inf: bool = False,
                 error: type[Exception] = ValueError):
    """``v`` if it is a number in the range (``int(v)`` when ``integer``), else ``error`` with the one-line message
    ``invalid value <v> for <what>; allowed: a number > 0 [and <= 1] [or None]``.

    ``integer``: a whole number (3 and 3.0); with ``strict`` only an ``int`` (not 3.0, not a bool). ``allow_none``:
    None passes (and is returned). ``allow_inf``: +-inf passes."""
    if v is None and allow_none:
        return v
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok and strict and integer:
        ok = isinstance(v, int)
    if ok:
        ok = not math.isnan(v) and (allow_inf or math.isfinite(v))
    if ok and integer:
        ok = math.isfinite(v) and float(v).is_integer()
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else (f"< {high}" if high_open else f"<= {high}")
        rng = " and ".join(s for s in (lo, hi) if s)
        raise error(f"invalid value {v!r} for {what}; allowed: {'an integer' if integer else 'a number'}"
                    f"{' ' + rng if rng else ''}{' or None' if allow_none else ''}")
    return int(v) if integer else v


def check_choice(v, what: str, choices, *, error: type[Exception] = ValueError):
    """``v`` if it is one of ``choices`` (a bool only matches a bool), else ``error`` naming the allowed ones."""
    if not any(v == c and isinstance(v, bool) == isinstance(c, bool) for c in choices):
        raise error(f"invalid value {v!r} for {what}; allowed: {', '.join(map(repr, choices))}")
    return v
