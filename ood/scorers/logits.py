r"""Scores of the logits alone: MSP, MaxLogit, energy, entropy and GEN.

Notation of the package (:mod:`ood.scorers`): :math:`f = Wh + b \in \mathbb{R}^K` the logits, :math:`p =
\mathrm{softmax}(f)`. Nothing is fitted and the network is not needed: the pure functions :func:`msp`,
:func:`maxlogit`, :func:`energy`, :func:`entropy` and :func:`gen` take a ``(B, K)`` tensor of logits (a notebook can
call them on cached logits), and each scorer class wraps one of them with its checked hyperparameters.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ood.numerics import energy as free_energy, wide
from ood.scorers.base import Scorer, check_param, register

__all__ = ["msp", "maxlogit", "energy", "entropy", "gen", "MSP", "MaxLogit", "Energy", "Entropy", "GEN"]


def msp(logits: Tensor) -> Tensor:
    r"""Maximum softmax probability :math:`\max_c \mathrm{softmax}(f)_c` (Hendrycks & Gimpel 2017)."""
    return torch.softmax(wide(logits), dim=1).amax(dim=1)


def maxlogit(logits: Tensor) -> Tensor:
    r"""Maximum logit :math:`\max_c f_c` (Hendrycks et al. 2022, "Scaling out-of-distribution detection
    for real-world settings", MaxLogit)."""
    return wide(logits).amax(dim=1)


def energy(logits: Tensor, T: float = 1.0) -> Tensor:
    r"""Negative free energy :math:`-E(x) = T \log\sum_c e^{f_c/T}` (Liu et al. 2020, Eq. 1 negated);
    T = 1 [paper]. ``ood.numerics.energy`` is :math:`E` itself (low = ID), which the losses and the sampler use."""
    return -free_energy(logits, T)


def entropy(logits: Tensor) -> Tensor:
    r"""Negative predictive entropy :math:`\sum_c p_c \log p_c` (0 for a one-hot prediction,
    :math:`-\log K` for the uniform one)."""
    logp = torch.log_softmax(wide(logits), dim=1)
    return (logp.exp() * logp).sum(dim=1)


def gen(logits: Tensor, gamma: float = 0.1, M: int = 100) -> Tensor:
    r"""Negative generalized entropy of the :math:`M` largest softmax probabilities (GEN, Liu et al. 2023):
    :math:`-\sum_{j=1}^{\min(M, K)} p_{(j)}^\gamma (1 - p_{(j)})^\gamma`, :math:`p_{(1)} \ge p_{(2)} \ge \dots`
    Computed in float64 (a tiny :math:`p` raised to :math:`\gamma = 0.1` is not negligible), returned in the
    input's (widened) dtype. See :class:`GEN`."""
    lg = wide(logits)
    p = torch.softmax(lg.double(), dim=1)
    top = p.topk(min(int(M), p.shape[1]), dim=1).values
    return (-(top.pow(gamma) * (1.0 - top).pow(gamma)).sum(dim=1)).to(lg.dtype)


@register(order=1)
class MSP(Scorer):
    r"""Maximum softmax probability.

    .. math:: S(x) = \max_c \mathrm{softmax}(f(x))_c

    Hendrycks & Gimpel, "A baseline for detecting misclassified and out-of-distribution examples in
    neural networks", ICLR 2017. No hyperparameters.
    """

    name = "msp"
    formula = r":math:`\max_c p_c`"
    source = "Hendrycks & Gimpel 2017"

    def score_features(self, pen, logits, model=None):
        return msp(logits)


@register(order=2)
class MaxLogit(Scorer):
    r"""Maximum logit.

    .. math:: S(x) = \max_c f_c(x)

    Hendrycks et al., "Scaling out-of-distribution detection for real-world settings", ICML 2022.
    No hyperparameters.
    """

    name = "maxlogit"
    formula = r":math:`\max_c f_c`"
    source = "Hendrycks et al. 2022"

    def score_features(self, pen, logits, model=None):
        return maxlogit(logits)


@register(order=3)
class Energy(Scorer):
    r"""Energy score (negative free energy).

    .. math:: S(x) = -E(x) = T \log\sum_c e^{f_c(x)/T}

    Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020, Eq. 1 (negated so that
    higher = ID). Default ``T = 1`` [paper and its code, ``energy_ood``].
    """

    name = "energy"
    formula = r":math:`T \log\sum_c e^{f_c/T}` (= :math:`-E(x)`), T = 1"
    source = "Liu et al. 2020"

    def __init__(self, T: float = 1.0):
        self.T = check_param(self.name, "T", T, low=0, low_open=True)

    def score_features(self, pen, logits, model=None):
        return energy(logits, self.T)


@register(order=4)
class Entropy(Scorer):
    r"""Negative predictive entropy.

    .. math:: S(x) = \sum_c p_c \log p_c, \quad p = \mathrm{softmax}(f(x))

    The classical uncertainty baseline (e.g. the entropy row of OpenOOD / pytorch-ood). No
    hyperparameters.
    """

    name = "entropy"
    formula = r":math:`\sum_c p_c \log p_c` (negative predictive entropy)"
    source = "(baseline)"

    def score_features(self, pen, logits, model=None):
        return entropy(logits)


@register(order=15)
class GEN(Scorer):
    r"""GEN: negative generalized entropy of the top-M softmax probabilities.

    .. math::
        S(x) = -\sum_{j=1}^{M'} p_{(j)}^{\gamma}\,\big(1 - p_{(j)}\big)^{\gamma}, \qquad
        p = \mathrm{softmax}(f(x)),\ p_{(1)} \ge p_{(2)} \ge \dots,\ M' = \min(M, K)

    Liu, Lochman & Zach, "GEN: pushing the limits of softmax-based out-of-distribution detection", CVPR 2023
    (its method: the generalized entropy :math:`G_\gamma` summed over the :math:`M` largest probabilities); the
    GEN code (``benchmark.py``, ``generalized_gamma_entropy``: sort, keep the last ``M``, sum, negate) is this
    formula. Defaults ``gamma = 0.1``, ``M = 100`` [paper (its ImageNet-1K experiments) and code:
    ``--gamma 0.1 --M 100``; OpenOOD's ``gen.yml`` has the same]. ``M`` is capped at the number of classes
    :math:`K` [ours: with :math:`K \le 100`, e.g. CIFAR-10/100, all probabilities enter, which is what the
    code's ``[:, -M:]`` slice does too]. A confident (peaked) prediction has a small entropy, so higher = ID.
    Computed in float64 (:func:`gen`): with :math:`\gamma = 0.1` even :math:`p = 10^{-30}` contributes
    :math:`10^{-3}`. No fitting.
    """

    name = "gen"
    formula = r":math:`-\sum_{j \le M} p_{(j)}^\gamma (1 - p_{(j)})^\gamma`, M largest p"
    source = "Liu et al. 2023"

    def __init__(self, gamma: float = 0.1, M: int = 100):
        self.gamma = check_param(self.name, "gamma", gamma, low=0, low_open=True)
        self.M = check_param(self.name, "M", M, low=1, integer=True)

    def score_features(self, pen, logits, model=None):
        return gen(logits, self.gamma, self.M)
