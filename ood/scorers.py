r"""Post-hoc OOD scores with one contract; **higher = more in-distribution**, always.

Notation: :math:`h \in \mathbb{R}^D` the penultimate vector (``model.pool(model.features(x))``),
:math:`f = Wh + b \in \mathbb{R}^K` the logits (``model.fc``), :math:`p = \mathrm{softmax}(f)`.

================  ===========================================================================  ======================
name              score (higher = more ID)                                                     source
================  ===========================================================================  ======================
``msp``           :math:`\max_c p_c`                                                           Hendrycks & Gimpel 2017
``maxlogit``      :math:`\max_c f_c`                                                           Hendrycks et al. 2022
``energy``        :math:`T \log\sum_c e^{f_c/T}` (= :math:`-E(x)`), T = 1                      Liu et al. 2020
``entropy``       :math:`\sum_c p_c \log p_c` (negative predictive entropy)                    (baseline)
``odin``          :math:`\max_c \mathrm{softmax}(f(\tilde x)/T)_c`, input perturbation          Liang et al. 2018
``mahalanobis``   :math:`\max_c -(h-\mu_c)^\top \Sigma^{-1} (h-\mu_c)`, tied :math:`\Sigma`      Lee et al. 2018
``knn``           :math:`-\lVert z - z_{(k)}\rVert_2`, :math:`z = h/\lVert h\rVert`, k-th         Sun et al. 2022
                  nearest ID-train neighbour
``react``         energy of :math:`W\min(h, c) + b`, c = 90th percentile of ID activations      Sun et al. 2021
``ash_p/b/s``     energy of :math:`W\,\mathrm{ASH}(h) + b` (prune / binarize / scale)           Djurisic et al. 2023
``dice``          energy of :math:`(M \odot W) h + b`, M keeps the top contributions            Sun & Li 2022
``gradnorm``      :math:`\lVert \partial_W \mathrm{KL}(u \Vert \mathrm{softmax}(f/T)) \rVert_1`  Huang et al. 2021
``vim``           :math:`\log\sum_c e^{f_c} - \alpha \lVert P^\perp (h - o)\rVert`               Wang et al. 2022
``gen``           :math:`-\sum_{j \le M} p_{(j)}^\gamma (1 - p_{(j)})^\gamma`, M largest p     Liu et al. 2023
``scale``         energy of :math:`W e^{s_1/s_2} h + b` (scaled, not pruned)                   Xu et al. 2024
``fdbd``          mean distance to the predicted class's decision boundaries over              Liu & Qin 2024
                  :math:`\lVert h - \bar h\rVert`
``rmd``           :math:`\mathrm{MD}_0(h) - \min_c \mathrm{MD}_c(h)` (relative Mahalanobis)    Ren et al. 2021
``nnguide``       energy times the mean of the k largest :math:`\hat h \cdot E_i \hat h_i`,    Park et al. 2023
                  a bank of energy-scaled ID-train features
``neco``          :math:`\lVert P_d\, s(h)\rVert / \lVert s(h)\rVert`, s standardizes,         Ammar et al. 2024
                  :math:`P_d` the top-d ID-train principal components
================  ===========================================================================  ======================

Sign convention: every function and scorer returns a tensor where a larger value means "more ID";
scores whose papers use the opposite sign (energy, KNN distance, Mahalanobis distance, ViM, GEN's
generalized entropy, RMD) are negated here, once, and nowhere else.

Contract (OpenOOD's ``setup``/``postprocess`` split, pytorch-ood's pure functions):

* the pure functions :func:`msp`, :func:`maxlogit`, :func:`energy`, :func:`entropy`, :func:`gen`, :func:`ash_p`,
  :func:`ash_b`, :func:`ash_s`, :func:`scale` need nothing fitted and can be called from a notebook on logits or
  features;
* a :class:`Scorer` has ``name``, ``needs_fit`` (statistics from ID-train), ``needs_network`` (True
  only for ODIN, which re-runs the network on a perturbed input), ``fit_features(train_pen,
  train_logits, train_labels, model)``, ``score_features(pen, logits, model)`` on cached features,
  and the conveniences ``fit(model, id_train_loader)`` and ``score(model, x)``;
* ``state_dict()`` returns a scorer's hyperparameters and fitted statistics as plain tensors and numbers, and
  ``load_state_dict(state)`` restores them (checking the attributes of ``fit_state`` that scoring needs), so that a
  fitted scorer travels in one file (``ood.detector``);
* :func:`extract` collects ``(pen, logits, labels)`` of a loader once, so that every scorer runs off
  cached features (``ood.evaluate``);
* :func:`build_scorer` builds one by name with checked parameters; ``DEFAULTS`` holds each scorer's
  default hyperparameters. Scorer hyperparameters are fixed at these values (the papers' protocol); none is tuned
  on the OOD test sets.

Everything is batched (no Python loop over samples) and runs on the device of its input.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ood.models import OODNet
from ood.numerics import check_choice, check_number, energy as free_energy, eval_mode, wide

__all__ = [
    "msp", "maxlogit", "energy", "entropy", "gen", "ash_p", "ash_b", "ash_s", "scale", "extract",
    "Scorer", "MSP", "MaxLogit", "Energy", "Entropy", "ODIN", "Mahalanobis", "KNN", "ReAct", "ASH", "ASHP", "ASHB",
    "ASHS", "DICE", "GradNorm", "ViM", "GEN", "SCALE", "FDBD", "RMD", "NNGuide", "NECO",
    "SCORERS", "DEFAULTS", "build_scorer", "profile_scorers",
]


# ----------------------------------------------------------------------------------------------
# Pure scoring functions (nothing fitted)
# ----------------------------------------------------------------------------------------------

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


def _ash_keep(x: Tensor, percentile: float, who: str = "ASH") -> tuple[Tensor, Tensor, int]:
    """Top-k values and indices per row, k = D - round(D * percentile / 100) as in the ASH code; at least 1
    is kept (our guard for tiny D, where the code's k could be 0)."""
    if x.dim() != 2:
        raise ValueError(f"{who} expects penultimate features of shape (B, D), got {tuple(x.shape)}")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile={percentile!r} must be in [0, 100]")
    d = x.shape[1]
    k = max(1, d - int(round(d * percentile / 100.0)))
    v, i = torch.topk(x, k, dim=1)
    return v, i, k


def ash_p(x: Tensor, percentile: float = 90) -> Tensor:
    r"""ASH-P (Djurisic et al. 2023, Alg. 1): keep the :math:`k = D - \mathrm{round}(D p / 100)` largest
    entries of each row of ``x`` (B, D), zero the rest. ``percentile = 0`` keeps everything."""
    v, i, _ = _ash_keep(x, percentile)
    return torch.zeros_like(x).scatter_(1, i, v)


def ash_b(x: Tensor, percentile: float = 90) -> Tensor:
    r"""ASH-B (Djurisic et al. 2023): the kept entries become :math:`s_1 / k` with :math:`s_1 = \sum_j x_j`
    the row sum before pruning (sum-preserving binarization), the rest 0."""
    s1 = x.sum(dim=1, keepdim=True)
    v, i, k = _ash_keep(x, percentile)
    return torch.zeros_like(x).scatter_(1, i, (s1 / k).expand_as(v).to(x.dtype))


def ash_s(x: Tensor, percentile: float = 90) -> Tensor:
    r"""ASH-S (Djurisic et al. 2023): prune as ASH-P, then multiply by :math:`\exp(s_1 / s_2)`,
    :math:`s_1` the row sum before and :math:`s_2` after pruning. Rows whose kept sum is 0 (all-zero
    activations) get factor 1 (our guard against 0/0; their pruned row is 0 anyway)."""
    s1 = x.sum(dim=1, keepdim=True)
    v, i, _ = _ash_keep(x, percentile)
    s2 = v.sum(dim=1, keepdim=True)
    ratio = torch.where(s2 != 0, s1 / torch.where(s2 != 0, s2, torch.ones_like(s2)), torch.zeros_like(s2))
    return torch.zeros_like(x).scatter_(1, i, v) * torch.exp(ratio)


def scale(x: Tensor, percentile: float = 85) -> Tensor:
    r"""SCALE (Xu et al. 2024): the **whole** row of ``x`` (B, D) times :math:`\exp(s_1 / s_2)`, :math:`s_1` the
    row sum and :math:`s_2` the sum of its :math:`k = D - \mathrm{round}(D p / 100)` largest entries (the ASH-S
    factor without the pruning). Rows whose top-k sum is 0 get factor 1 (the guard of :func:`ash_s`)."""
    s1 = x.sum(dim=1, keepdim=True)
    v, _, _ = _ash_keep(x, percentile, who="SCALE")
    s2 = v.sum(dim=1, keepdim=True)
    ratio = torch.where(s2 != 0, s1 / torch.where(s2 != 0, s2, torch.ones_like(s2)), torch.zeros_like(s2))
    return x * torch.exp(ratio)


# ----------------------------------------------------------------------------------------------
# Feature extraction
# ----------------------------------------------------------------------------------------------



def _forward_parts(model: OODNet, x: Tensor) -> tuple[Tensor, Tensor]:
    fmap = model.features(x)
    pen = model.pool(fmap)
    return pen, model.head(pen)


def extract(model: OODNet, loader: Iterable, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Penultimate features, logits and labels of every batch of ``loader``.

    ``loader`` yields ``(x, y)`` with ``x`` float in [0, 1]; batches are moved to ``device`` when given.
    Runs ``fmap = model.features(x); pen = model.pool(fmap); logits = model.head(pen)`` under
    ``torch.no_grad()`` in eval mode (the model's training flag is restored afterwards) and concatenates
    on the device the batches were computed on. Returns ``pen (N, D)``, ``logits (N, K)``, ``labels (N,)``.
    """
    pens, logits, labels = [], [], []
    with eval_mode(model), torch.no_grad():
        for x, y in loader:
            if device is not None:
                x, y = x.to(device), y.to(device)
            pen, lg = _forward_parts(model, x)
            pens.append(pen)
            logits.append(lg)
            labels.append(torch.as_tensor(y).to(pen.device))
    if not pens:
        raise ValueError("the loader yielded no batches; need at least one (x, y) batch")
    return torch.cat(pens), torch.cat(logits), torch.cat(labels)


# ----------------------------------------------------------------------------------------------
# Scorer base class and parameter checks
# ----------------------------------------------------------------------------------------------

def _check_number(name: str, key: str, v, **rule):
    """A scorer parameter checked by ``ood.numerics.check_number``."""
    return check_number(v, f"parameter {key!r} of scorer {name!r}", **rule)


class Scorer:
    """Base class of every post-hoc scorer (see the module docstring for the contract).

    Subclasses set ``name``, ``needs_fit``, ``needs_network`` and implement :meth:`score_features`
    (and :meth:`fit_features` when ``needs_fit``). Hyperparameters are keyword arguments of
    ``__init__``, stored as attributes and listed in :attr:`params`.
    """

    name: str = ""
    needs_fit: bool = False
    needs_network: bool = False
    _param_names: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- fitting ------------------------------------------------------------------------------
    def fit_features(self, train_pen: Tensor, train_logits: Tensor, train_labels: Tensor, model: OODNet) -> "Scorer":
        """Fit statistics from cached ID-train penultimate features ``(N, D)``, logits ``(N, K)`` and labels
        ``(N,)``; ``model`` gives ``model.fc``. Default: nothing to fit."""
        return self

    def fit(self, model: OODNet, id_train_loader: Iterable, device=None) -> "Scorer":
        """Convenience: :func:`extract` the ID-train loader, then :meth:`fit_features` (no-op if not needed)."""
        if not self.needs_fit:
            return self
        pen, logits, labels = extract(model, id_train_loader, device=device)
        return self.fit_features(pen, logits, labels, model)

    # -- saving and restoring a fitted scorer --------------------------------------------------
    #: The attributes :meth:`fit_features` sets: the fitted state a saved scorer must carry to score again
    #: (``tests/test_detector.py`` checks, for every registered scorer, that fitting sets no attribute outside it).
    fit_state: tuple[str, ...] = ()

    def required_state(self) -> tuple[str, ...]:
        """The attributes of :attr:`fit_state` that scoring needs with these hyperparameters (default: all of them)."""
        return self.fit_state

    def state_dict(self) -> dict[str, Any]:
        """Every instance attribute, hyperparameters and fitted statistics alike, as plain values: tensors (detached
        CPU copies), numpy arrays (as tensors), numbers, booleans, strings, None, and lists/tuples of these (as
        lists). Loadable with ``torch.load(..., weights_only=True)``; :meth:`load_state_dict` restores it. An
        attribute of another type raises TypeError (nothing is dropped silently)."""
        import numpy as np

        def plain(key, v):
            if isinstance(v, Tensor):
                return v.detach().to("cpu", copy=True)
            if isinstance(v, np.ndarray):
                return torch.from_numpy(v.copy())
            if v is None or isinstance(v, (bool, int, float, str)):
                return v
            if isinstance(v, (list, tuple)):
                return [plain(key, e) for e in v]
            raise TypeError(f"attribute {key!r} of scorer {self.name!r} is a {type(v).__name__}, which a saved state "
                            "cannot hold; allowed: tensors, arrays, numbers, booleans, strings, None and lists")

        return {k: plain(k, v) for k, v in vars(self).items()}

    def load_state_dict(self, state: dict[str, Any]) -> "Scorer":
        """Restore what :meth:`state_dict` returned into this scorer (built with the same hyperparameters, e.g. by
        :func:`build_scorer`). ValueError, one line, when the state names an attribute this scorer does not have,
        was saved with other hyperparameters, or lacks a fitted attribute that scoring needs
        (:meth:`required_state`; e.g. a file written before the scorer was fitted, or edited)."""
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise ValueError(f"the saved state of scorer {self.name!r} must be a mapping of attribute names, got "
                             f"{type(state).__name__}")
        known = set(vars(self)) | set(self.fit_state)
        unknown = sorted(set(state) - known)
        if unknown:
            raise ValueError(f"the saved state of scorer {self.name!r} has attributes it does not know: "
                             f"{', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        for k, v in self.params.items():
            if k in state and k not in self.fit_state and state[k] != v:
                raise ValueError(f"the saved state of scorer {self.name!r} was fitted with {k}={state[k]!r}, but "
                                 f"this scorer has {k}={v!r}")
        for k, v in state.items():
            setattr(self, k, v)
        missing = [k for k in self.required_state() if getattr(self, k, None) is None]
        if missing:
            raise ValueError(f"scorer {self.name!r} needs its fitted state ({', '.join(self.required_state())}), "
                             f"but the saved state lacks {', '.join(missing)}; fit it again on ID-train features")
        return self

    def _check_fitted(self, *attrs: str) -> None:
        if any(getattr(self, a, None) is None for a in attrs):
            raise RuntimeError(f"scorer {self.name!r} is not fitted; call fit(model, id_train_loader) or "
                               f"fit_features(train_pen, train_logits, train_labels, model) first")

    # -- scoring ------------------------------------------------------------------------------
    def score_features(self, pen: Tensor, logits: Tensor, model: OODNet) -> Tensor:  # pragma: no cover - abstract
        """Scores ``(B,)`` from penultimate features ``(B, D)`` and logits ``(B, K)``; higher = more ID."""
        raise NotImplementedError

    def score(self, model: OODNet, x: Tensor) -> Tensor:
        """Convenience: run the network on ``x`` (float in [0, 1]) in eval mode without gradients, then
        :meth:`score_features`."""
        with eval_mode(model), torch.no_grad():
            pen, logits = _forward_parts(model, x)
            return self.score_features(pen, logits, model)


def _fc(model: OODNet, device, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """``model.fc`` weight ``(K, D)`` and bias ``(K,)`` (zeros when the head has no bias), detached."""
    w = model.fc.weight.detach().to(device=device, dtype=dtype)
    b = model.fc.bias
    b = torch.zeros(w.shape[0], device=device, dtype=dtype) if b is None else b.detach().to(device=device, dtype=dtype)
    return w, b


def _percentile(x: Tensor, q: float) -> float:
    """``np.percentile(x, q)`` (linear interpolation) of all entries of ``x``, via ``torch.kthvalue`` on the
    tensor's device (no size limit, unlike ``torch.quantile``)."""
    flat = wide(x.detach().reshape(-1))
    n = flat.numel()
    pos = q / 100.0 * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    v_lo = float(flat.kthvalue(lo + 1).values)
    v_hi = v_lo if hi == lo else float(flat.kthvalue(hi + 1).values)
    return v_lo + (pos - lo) * (v_hi - v_lo)


# ----------------------------------------------------------------------------------------------
# Logit-based scores
# ----------------------------------------------------------------------------------------------

class MSP(Scorer):
    r"""Maximum softmax probability.

    .. math:: S(x) = \max_c \mathrm{softmax}(f(x))_c

    Hendrycks & Gimpel, "A baseline for detecting misclassified and out-of-distribution examples in
    neural networks", ICLR 2017. No hyperparameters.
    """

    name = "msp"

    def score_features(self, pen, logits, model=None):
        return msp(logits)


class MaxLogit(Scorer):
    r"""Maximum logit.

    .. math:: S(x) = \max_c f_c(x)

    Hendrycks et al., "Scaling out-of-distribution detection for real-world settings", ICML 2022.
    No hyperparameters.
    """

    name = "maxlogit"

    def score_features(self, pen, logits, model=None):
        return maxlogit(logits)


class Energy(Scorer):
    r"""Energy score (negative free energy).

    .. math:: S(x) = -E(x) = T \log\sum_c e^{f_c(x)/T}

    Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020, Eq. 1 (negated so that
    higher = ID). Default ``T = 1`` [paper and its code, ``energy_ood``].
    """

    name = "energy"
    _param_names = ("T",)

    def __init__(self, T: float = 1.0):
        self.T = _check_number(self.name, "T", T, low=0, low_open=True)

    def score_features(self, pen, logits, model=None):
        return energy(logits, self.T)


class Entropy(Scorer):
    r"""Negative predictive entropy.

    .. math:: S(x) = \sum_c p_c \log p_c, \quad p = \mathrm{softmax}(f(x))

    The classical uncertainty baseline (e.g. the entropy row of OpenOOD / pytorch-ood). No
    hyperparameters.
    """

    name = "entropy"

    def score_features(self, pen, logits, model=None):
        return entropy(logits)


class ODIN(Scorer):
    r"""ODIN: temperature scaling and input pre-processing.

    .. math::
        \tilde x = x - \varepsilon\, \mathrm{sign}\big(-\nabla_x \log \mathrm{softmax}(f(x)/T)_{\hat y}\big),
        \quad \hat y = \arg\max_c f_c(x), \qquad
        S(x) = \max_c \mathrm{softmax}(f(\tilde x)/T)_c

    i.e. one signed gradient step of size :math:`\varepsilon` that *decreases* the cross-entropy of
    :math:`f(x)/T` with the predicted label, then the temperature-scaled MSP.

    Liang, Li & Srikant, "Enhancing the reliability of out-of-distribution image detection in neural
    networks", ICLR 2018, Eq. 2. Defaults ``T = 1000``, ``eps = 0.0014`` [the ODIN paper's CIFAR
    DenseNet setting; a point of the Energy-OE code's ODIN grid (``energy_ood/CIFAR/run.sh``), whose
    ``ODIN()`` in ``utils/score_calculation.py`` is the algorithm below].

    Pixel space: the ODIN code takes the gradient with respect to the *normalized* input, divides its
    sign by the per-channel std and subtracts ``eps`` times that from the normalized input. Since
    :math:`x_n = (x - m)/s` with :math:`s > 0`, the gradient with respect to :math:`x` is the one with
    respect to :math:`x_n` divided by :math:`s`, so the signs agree, and
    :math:`x_n - \varepsilon\,\mathrm{sign}/s = ((x - \varepsilon\,\mathrm{sign}) - m)/s`: the code's step
    is exactly a step of :math:`\varepsilon` on the [0, 1] input. Our models take [0, 1] input and
    normalize inside, so we perturb ``x`` directly by ``eps * sign(grad)``, without clamping (as the
    code). As in the code, a zero gradient counts as positive (``torch.ge(grad, 0)``).

    ``needs_network``: the score needs the network (it re-runs it on :math:`\tilde x`); use
    :meth:`score`. :meth:`score_features` only works for ``eps = 0``, where ODIN is the MSP of
    :math:`f/T`.
    """

    name = "odin"
    needs_network = True
    _param_names = ("T", "eps")

    def __init__(self, T: float = 1000.0, eps: float = 0.0014):
        self.T = _check_number(self.name, "T", T, low=0, low_open=True)
        self.eps = _check_number(self.name, "eps", eps, low=0)

    def perturb(self, model: OODNet, x: Tensor) -> Tensor:
        """The ODIN input :math:`\\tilde x` for a batch ``x`` in [0, 1] (model assumed in eval mode)."""
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            logits = wide(model(xg))
            labels = logits.argmax(dim=1)
            # sum, not mean: the same sign per sample, without a 1/B factor that could underflow at T = 1000
            loss = F.cross_entropy(logits / self.T, labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xg)
        step = torch.where(grad >= 0, torch.ones_like(grad), -torch.ones_like(grad))
        return x.detach() - self.eps * step

    def score(self, model: OODNet, x: Tensor) -> Tensor:
        with eval_mode(model):
            xt = self.perturb(model, x) if self.eps > 0 else x.detach()
            with torch.no_grad():
                return msp(wide(model(xt)) / self.T)

    def score_features(self, pen, logits, model=None):
        if self.eps != 0:
            raise RuntimeError(f"scorer 'odin' with eps={self.eps} needs the network (needs_network=True); "
                               f"call score(model, x) instead of score_features")
        return msp(wide(logits) / self.T)


# ----------------------------------------------------------------------------------------------
# Feature-based scores fitted on ID-train
# ----------------------------------------------------------------------------------------------

class Mahalanobis(Scorer):
    r"""Mahalanobis distance to the closest class mean with a tied covariance, on the penultimate layer.

    .. math::
        \mu_c = \frac{1}{N_c}\sum_{i: y_i = c} h_i, \quad
        \Sigma = \frac{1}{N}\sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top, \quad
        S(x) = \max_c -(h - \mu_c)^\top \Sigma^{+} (h - \mu_c)

    Lee et al., "A simple unified framework for detecting out-of-distribution samples and adversarial
    attacks", NeurIPS 2018, Eq. 2 (class means and tied covariance from ID-train features, as in their
    ``sample_estimator``). Penultimate layer only, **no input pre-processing** (their noise magnitude is
    0 here) and no feature ensemble / logistic regression over layers [our choice: the post-hoc
    baseline form of the ViM benchmark code]. Lee et al.'s code scores with a factor -1/2; we follow the
    ViM benchmark code (no 1/2), a monotone rescaling that leaves every metric unchanged.
    :math:`\Sigma^{+}` is ``torch.linalg.pinv(..., hermitian=True)`` in float64 (sklearn's
    ``EmpiricalCovariance`` also uses a pseudo-inverse). The quadratic form is evaluated as
    :math:`h^\top P h - 2 h^\top P \mu_c + \mu_c^\top P \mu_c` in float64 (memory ``B x K``, not ``B x K x D``).
    No hyperparameters. Classes absent from the training labels have no mean and are skipped.
    """

    name = "mahalanobis"
    needs_fit = True
    fit_state = ("classes", "means", "precision")

    def __init__(self):
        self.means = None      # (K', D) float64
        self.precision = None  # (D, D) float64

    def fit_features(self, train_pen, train_logits, train_labels, model):
        h = train_pen.detach().double()
        y = train_labels.detach().to(h.device).long()
        classes = torch.unique(y)
        onehot = (y[:, None] == classes[None, :]).double()          # (N, K')
        means = (onehot.T @ h) / onehot.sum(0)[:, None]             # (K', D)
        centered = h - means[torch.searchsorted(classes, y)]
        cov = centered.T @ centered / h.shape[0]
        self.classes, self.means = classes, means
        self.precision = torch.linalg.pinv(cov, hermitian=True)
        return self

    @torch.no_grad()
    def class_distances(self, pen: Tensor) -> Tensor:
        """Squared Mahalanobis distances :math:`(h - \\mu_c)^\\top \\Sigma^{+} (h - \\mu_c)`, ``(B, K')`` float64."""
        self._check_fitted("means", "precision")
        h = pen.detach().double()
        P, mu = self.precision.to(h.device), self.means.to(h.device)
        hP = h @ P
        return (hP * h).sum(1, keepdim=True) - 2.0 * hP @ mu.T + ((mu @ P) * mu).sum(1)[None, :]

    @torch.no_grad()
    def score_features(self, pen, logits=None, model=None):
        return (-self.class_distances(pen)).amax(dim=1).float()


class KNN(Scorer):
    r"""Deep nearest neighbours: distance to the k-th nearest L2-normalized ID-train feature.

    .. math::
        z = \frac{h}{\lVert h\rVert_2}, \qquad S(x) = -\lVert z - z^{\text{train}}_{(k)}(z)\rVert_2

    where :math:`z^{\text{train}}_{(k)}(z)` is the k-th nearest normalized ID-train feature.
    Sun, Ming, Zhu & Li, "Out-of-distribution detection with deep nearest neighbors", ICML 2022, Eq. 2
    and their ``knn-ood`` code (normalize with ``+1e-10``, faiss ``IndexFlatL2``, score ``-D[:, -1]``).
    Their faiss index returns the *squared* distance; we return the distance, a monotone transform
    with identical metrics. Default ``k = 50`` [paper/code, CIFAR-10]; the paper uses ``k = 1000`` on
    ImageNet (full training set). Invariant to the scale of the features (normalization).

    Exact search with batched matrix products: queries in chunks of ``query_chunk``, the bank in
    chunks of ``bank_chunk``, a running top-k merged on the device (no faiss dependency).
    """

    name = "knn"
    needs_fit = True
    fit_state = ("bank", "bank_sq")
    _param_names = ("k",)
    query_chunk = 2048
    bank_chunk = 16384

    def __init__(self, k: int = 50):
        self.k = _check_number(self.name, "k", k, low=1, integer=True)
        self.bank = None

    @staticmethod
    def _normalize(h: Tensor) -> Tensor:
        h = wide(h.detach())
        return h / (h.norm(dim=1, keepdim=True) + 1e-10)

    def fit_features(self, train_pen, train_logits, train_labels, model):
        n = train_pen.shape[0]
        if self.k > n:
            raise ValueError(f"invalid value {self.k} for parameter 'k' of scorer 'knn': only {n} ID-train "
                             f"features; allowed: 1 <= k <= {n}")
        self.bank = self._normalize(train_pen)
        self.bank_sq = (self.bank * self.bank).sum(1)
        return self

    @torch.no_grad()
    def score_features(self, pen, logits=None, model=None):
        self._check_fitted("bank")
        bank = self.bank.to(pen.device)
        bank_sq = self.bank_sq.to(pen.device)
        z = self._normalize(pen).to(bank.dtype)
        out = []
        for q in z.split(self.query_chunk):
            q_sq = (q * q).sum(1, keepdim=True)
            best = None                                              # (b, <=k) smallest squared distances
            for start in range(0, bank.shape[0], self.bank_chunk):
                b = bank[start:start + self.bank_chunk]
                d2 = q_sq + bank_sq[start:start + self.bank_chunk][None, :] - 2.0 * q @ b.T
                cand = d2 if best is None else torch.cat([best, d2], dim=1)
                best = torch.topk(cand, min(self.k, cand.shape[1]), dim=1, largest=False).values
            out.append(-best[:, self.k - 1].clamp_min(0).sqrt())
        return torch.cat(out)


class ReAct(Scorer):
    r"""ReAct: rectify (clip) the penultimate activations, then the energy score.

    .. math:: S(x) = \log\sum_c \exp\big(W \min(h, c) + b\big)_c

    with :math:`c` the ``percentile``-th percentile of all ID-train penultimate activations (over samples
    and units, ``np.percentile(activations.flatten(), p)``). Sun, Guo & Li, "ReAct: out-of-distribution
    detection with rectified activations", NeurIPS 2021, Eq. 1-2. Default ``percentile = 90`` [paper and
    code]. The ReAct code estimates :math:`c` on ID *validation* images; we use ID-train features, so no
    test image enters a statistic [our choice, as OpenOOD]. ``threshold`` fixes :math:`c` directly
    (``float('inf')`` = no clipping = the energy score); ``None`` estimates it in :meth:`fit_features`.
    """

    name = "react"
    needs_fit = True
    fit_state = ("threshold",)
    _param_names = ("percentile", "threshold")

    def __init__(self, percentile: float = 90.0, threshold: float | None = None):
        self.percentile = _check_number(self.name, "percentile", percentile, low=0, high=100)
        self.threshold = _check_number(self.name, "threshold", threshold, allow_none=True, allow_inf=True)
        self._fixed = threshold is not None

    def fit_features(self, train_pen, train_logits, train_labels, model):
        if not self._fixed:
            self.threshold = _percentile(train_pen, self.percentile)
        return self

    @torch.no_grad()
    def score_features(self, pen, logits, model):
        self._check_fitted("threshold")
        return energy(model.head(pen.clamp(max=self.threshold)))


class ASH(Scorer):
    r"""ASH: activation shaping of the penultimate vector, then the energy score.

    .. math:: S(x) = \log\sum_c \exp\big(W\, a(h) + b\big)_c

    with :math:`a` one of :func:`ash_p` (prune: keep the top :math:`k = D - \mathrm{round}(Dp/100)`
    entries per sample, zero the rest), :func:`ash_b` (kept entries set to :math:`s_1/k`, sum-preserving
    binarization) or :func:`ash_s` (pruned vector times :math:`\exp(s_1/s_2)`), :math:`s_1, s_2` the sums
    before and after pruning. Djurisic, Bozanic, Ashok & Liu, "Extremely simple activation shaping for
    out-of-distribution detection", ICLR 2023, Sec. 3 and their ``ash`` code (applied after global
    average pooling, scored with energy). No fitting: the shaping is per sample.

    Default ``percentile = 90`` for all three variants [our choice]: the paper's headline "remove 90%"
    and the ash code's CIFAR-10 config (``ash_s@90``). The paper's CIFAR DenseNet-101 table used 95, and
    ImageNet ResNet-50 used 60 / 65 / 90 (P / B / S); with our small CPU nets (D = 128) 95 keeps only 6
    units, so we default to 90.
    """

    needs_fit = False
    _param_names = ("percentile",)
    _shape = staticmethod(ash_p)

    def __init__(self, percentile: float = 90.0):
        self.percentile = _check_number(self.name, "percentile", percentile, low=0, high=100, high_open=True)

    @torch.no_grad()
    def score_features(self, pen, logits, model):
        return energy(model.head(type(self)._shape(pen, self.percentile)))


class ASHP(ASH):
    __doc__ = ASH.__doc__
    name = "ash_p"
    _shape = staticmethod(ash_p)


class ASHB(ASH):
    __doc__ = ASH.__doc__
    name = "ash_b"
    _shape = staticmethod(ash_b)


class ASHS(ASH):
    __doc__ = ASH.__doc__
    name = "ash_s"
    _shape = staticmethod(ash_s)


class DICE(Scorer):
    r"""DICE: directed sparsification of the last layer's weights, then the energy score.

    .. math::
        V = \bar h \odot W \ (V_{cj} = \bar h_j W_{cj}), \quad
        M_{cj} = [V_{cj} > \mathrm{percentile}_p(V)], \quad
        S(x) = \log\sum_c \exp\big((M \odot W) h + b\big)_c

    with :math:`\bar h` the mean ID-train penultimate vector and the percentile taken over all
    :math:`K \times D` entries of :math:`V` (``np.percentile(contrib, p)``, linear interpolation).
    Sun & Li, "DICE: leveraging sparsification for out-of-distribution detection", ECCV 2022, Eq. 3-5
    and their ``RouteDICE`` (strict ``>``, bias kept). ``percentile`` is their sparsity ``p``:
    ``percentile = 90`` keeps the top 10 % of the weights [paper and code, CIFAR: ``demo-cifar.sh --p 90``].
    ``percentile = 0`` keeps **every** weight [our reading; the code's strict ``>`` would drop the
    single smallest entry there], so that DICE at 0 is the energy score.
    """

    name = "dice"
    needs_fit = True
    fit_state = ("mask", "weight", "bias")
    _param_names = ("percentile",)

    def __init__(self, percentile: float = 90.0):
        self.percentile = _check_number(self.name, "percentile", percentile, low=0, high=100, high_open=True)
        self.weight = None

    def fit_features(self, train_pen, train_logits, train_labels, model):
        w, b = _fc(model, train_pen.device, torch.float64)
        mean_act = train_pen.detach().double().mean(dim=0)
        contrib = mean_act[None, :] * w
        if self.percentile == 0:
            mask = torch.ones_like(contrib, dtype=torch.bool)
        else:
            mask = contrib > _percentile(contrib, self.percentile)
        self.mask = mask
        self.weight = (w * mask).float()
        self.bias = b.float()
        return self

    @torch.no_grad()
    def score_features(self, pen, logits=None, model=None):
        self._check_fitted("weight")
        h = wide(pen.detach())
        w, b = self.weight.to(h.device, h.dtype), self.bias.to(h.device, h.dtype)
        return energy(h @ w.T + b)


class GradNorm(Scorer):
    r"""GradNorm: L1 norm of the last layer's weight gradient of the KL divergence to the uniform.

    .. math::
        S(x) = \Big\lVert \frac{\partial\, \mathrm{KL}(u \,\Vert\, \mathrm{softmax}(f/T))}{\partial W}
        \Big\rVert_1 = \frac{1}{T} \sum_c \big| p^{T}_c - \tfrac1K \big| \cdot \sum_j |h_j|,
        \quad p^T = \mathrm{softmax}(f/T)

    since :math:`\partial \mathrm{KL}/\partial f = (p^T - u)/T` and :math:`\partial f/\partial W =
    \cdot \otimes h`. Huang, Geng & Li, "On the importance of gradients for detecting distributional
    shifts in the wild", NeurIPS 2021, Eq. 4-5 (not the later "Gradients as a measure of
    uncertainty"). Their code (``gradnorm_ood``) back-propagates ``sum_c -log p_c`` (targets all ones,
    i.e. :math:`K` times the KL up to a constant) per sample and takes the L1 norm of the **weight**
    gradient of the last layer (no bias); that is :math:`K` times our value, a constant factor with
    identical metrics. Default ``T = 1`` [paper and code]. Closed form from cached features, no autograd.
    """

    name = "gradnorm"
    _param_names = ("T",)

    def __init__(self, T: float = 1.0):
        self.T = _check_number(self.name, "T", T, low=0, low_open=True)

    @torch.no_grad()
    def score_features(self, pen, logits, model=None):
        logits = wide(logits.detach())
        k = logits.shape[1]
        p = torch.softmax(logits / self.T, dim=1)
        return (p - 1.0 / k).abs().sum(1) * wide(pen.detach()).abs().sum(1).to(p.dtype) / self.T


class ViM(Scorer):
    r"""ViM: virtual-logit matching, energy minus the scaled norm of the feature residual.

    .. math::
        o = -W^{+} b, \quad
        \Sigma = \frac1N \sum_i (h_i - o)(h_i - o)^\top, \quad
        R = \text{eigenvectors of } \Sigma \text{ beyond the top } d, \\
        \alpha = \frac{\operatorname{mean}_i \max_c f_c(x_i)}{\operatorname{mean}_i \lVert R^\top (h_i - o)\rVert},
        \qquad S(x) = \log\sum_c e^{f_c(x)} - \alpha \lVert R^\top (h - o)\rVert

    (means over ID-train). Wang, Li, Feng & Zhang, "ViM: out-of-distribution with virtual-logit
    matching", CVPR 2022, Eq. 5-9, and their ``benchmark.py``: ``score = -vlogit + energy`` (higher =
    ID, as here), covariance ``EmpiricalCovariance(assume_centered=True)`` of :math:`h - o`.
    Principal dimension ``dim``: ``None`` picks the ViM code's rule, 1000 if :math:`D \ge 2048`, 512 if
    :math:`D \ge 768` [code: 512 for the ViT-B's 768], else :math:`\lfloor D/2 \rfloor` [our choice for
    the small CIFAR nets, as OpenOOD's 256 for ResNet-18's 512]. A ``dim >= D`` raises (no residual).
    Eigen-decomposition in float64 (``torch.linalg.eigh``).
    """

    name = "vim"
    needs_fit = True
    fit_state = ("origin", "residual_basis", "principal_dim", "alpha")
    _param_names = ("dim",)

    def __init__(self, dim: int | None = None):
        self.dim = _check_number(self.name, "dim", dim, low=0, integer=True, allow_none=True)
        self.residual_basis = None

    @staticmethod
    def default_dim(feature_dim: int) -> int:
        if feature_dim >= 2048:
            return 1000
        if feature_dim >= 768:
            return 512
        return feature_dim // 2

    def fit_features(self, train_pen, train_logits, train_labels, model):
        h = train_pen.detach().double()
        d_feat = h.shape[1]
        dim = self.default_dim(d_feat) if self.dim is None else self.dim
        if dim >= d_feat:
            raise ValueError(f"invalid value {dim} for parameter 'dim' of scorer 'vim': the principal subspace "
                             f"must be smaller than the feature dimension {d_feat}; allowed: 0 <= dim < {d_feat}")
        w, b = _fc(model, h.device, torch.float64)
        self.origin = -torch.linalg.pinv(w) @ b                    # (D,)
        x = h - self.origin
        cov = x.T @ x / x.shape[0]
        evals, evecs = torch.linalg.eigh(cov)                       # ascending
        order = torch.argsort(evals, descending=True)
        self.residual_basis = evecs[:, order[dim:]].contiguous()    # (D, D - dim)
        self.principal_dim = dim
        res = (x @ self.residual_basis).norm(dim=1)
        self.alpha = float(wide(train_logits.detach()).double().amax(dim=1).mean() / res.mean())
        return self

    def residual_norm(self, pen: Tensor) -> Tensor:
        """:math:`\\lVert R^\\top (h - o)\\rVert` per row (float64)."""
        self._check_fitted("residual_basis")
        x = pen.detach().double() - self.origin.to(pen.device)
        return (x @ self.residual_basis.to(pen.device)).norm(dim=1)

    @torch.no_grad()
    def score_features(self, pen, logits, model=None):
        res = self.residual_norm(pen)
        return (energy(wide(logits.detach()).double()) - self.alpha * res).float()


# ----------------------------------------------------------------------------------------------
# Newer post-hoc scores (issue 28): GEN, SCALE, fDBD, RMD, NNGuide, NECO
# ----------------------------------------------------------------------------------------------

def _check_bool(name: str, key: str, v) -> bool:
    """A boolean scorer parameter (``True`` or ``False``, not 0 / 1)."""
    return check_choice(v, f"parameter {key!r} of scorer {name!r}", (True, False))


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
    _param_names = ("gamma", "M")

    def __init__(self, gamma: float = 0.1, M: int = 100):
        self.gamma = _check_number(self.name, "gamma", gamma, low=0, low_open=True)
        self.M = _check_number(self.name, "M", M, low=1, integer=True)

    def score_features(self, pen, logits, model=None):
        return gen(logits, self.gamma, self.M)


class SCALE(Scorer):
    r"""SCALE: scale the whole penultimate vector by the ASH-S factor (no pruning), then the energy score.

    .. math::
        s_1 = \sum_j h_j, \quad s_2 = \sum_{j \in \mathrm{top}_k(h)} h_j, \quad
        k = D - \mathrm{round}(D p / 100), \qquad
        S(x) = \log\sum_c \exp\big(W\, e^{s_1/s_2} h + b\big)_c

    per sample (:func:`scale`). Xu, Chen, Franchi & Yao, "Scaling for training time and post-hoc
    out-of-distribution detection enhancement", ICLR 2024 (its SCALE method: the ASH-S scaling factor applied to
    the *unpruned* activations after the last average pooling, scored with energy) and their ``scale_net.py``
    (``k = n - round(n * percentile / 100)``, ``input * exp(s1 / s2)``). Default ``percentile = 85`` [code:
    ``configs/postprocessors/scale.yml`` of the SCALE repository; OpenOOD's ``scale.yml`` has the same]. As for
    ASH, at least one unit is kept in :math:`s_2` [ours, for tiny D]. No fitting: the factor is per sample.
    """

    name = "scale"
    _param_names = ("percentile",)

    def __init__(self, percentile: float = 85.0):
        self.percentile = _check_number(self.name, "percentile", percentile, low=0, high=100, high_open=True)

    @torch.no_grad()
    def score_features(self, pen, logits, model):
        return energy(model.head(scale(wide(pen.detach()), self.percentile).to(pen.dtype)))


class FDBD(Scorer):
    r"""fDBD: the mean distance of the feature to the decision boundaries of its predicted class, regularized by
    its distance to the mean ID-train feature.

    .. math::
        \hat y = \arg\max_c f_c, \qquad
        S(x) = \frac{1}{K - 1} \sum_{c \ne \hat y}
        \frac{\lvert (w_{\hat y} - w_c)^\top h + b_{\hat y} - b_c \rvert}{\lVert w_{\hat y} - w_c\rVert_2}
        \Big/ \lVert h - \bar h\rVert_2

    with :math:`f = Wh + b` the head and :math:`\bar h` the mean penultimate vector of ID-train (the only fitted
    statistic). Each summand is the closed-form distance from :math:`h` to the hyperplane
    :math:`f_{\hat y} = f_c`. Liu & Qin, "Fast decision boundary based out-of-distribution detector", ICML 2024
    (its score: the average over the :math:`K - 1` other classes, normalized by the distance to the training mean);
    their ``run_cifar.py`` **sums** over the classes (no :math:`1/(K-1)`, a constant factor with identical
    metrics) and divides by ``torch.norm(feat - train_mean)``, as here. OpenOOD's port also offers
    :math:`\lVert h\rVert` as the normalizer (``distance_as_normalizer``); we keep the paper's. Penultimate
    layer; no hyperparameters. Computed in float64 from ``h`` and the head fitted with the statistics. Two
    classes with identical weight vectors have no boundary and raise at fit time; :math:`\lVert h - \bar h\rVert`
    is floored at :math:`10^{-12}` [ours, against 0/0].
    """

    name = "fdbd"
    needs_fit = True
    fit_state = ("boundary_norms", "weight", "bias", "train_mean")

    def __init__(self):
        self.train_mean = None

    def fit_features(self, train_pen, train_logits, train_labels, model):
        h = train_pen.detach().double()
        w, b = _fc(model, h.device, torch.float64)
        k = w.shape[0]
        if k < 2:
            raise ValueError("scorer 'fdbd' needs at least two classes (a decision boundary); the head has "
                             f"{k} output")
        norms = torch.stack([(w - w[c]).norm(dim=1) for c in range(k)])      # (K, K), ||w_c - w_c'||
        off = ~torch.eye(k, dtype=torch.bool, device=w.device)
        if bool((norms[off] == 0).any()):
            i, j = [int(t) for t in ((norms == 0) & off).nonzero()[0]]
            raise ValueError(f"scorer 'fdbd': classes {i} and {j} have identical weight vectors, so there is no "
                             "decision boundary between them")
        self.boundary_norms = torch.where(off, norms, torch.ones_like(norms))  # diagonal: 1 (its term is 0)
        self.weight, self.bias = w, b
        self.train_mean = h.mean(dim=0)
        return self

    @torch.no_grad()
    def score_features(self, pen, logits=None, model=None):
        self._check_fitted("train_mean")
        h = pen.detach().double()
        w, b = self.weight.to(h.device), self.bias.to(h.device)
        f = h @ w.T + b
        top, pred = f.max(dim=1)
        dist = ((top[:, None] - f).abs() / self.boundary_norms.to(h.device)[pred]).sum(dim=1) / (w.shape[0] - 1)
        return (dist / (h - self.train_mean.to(h.device)).norm(dim=1).clamp_min(1e-12)).float()


class RMD(Mahalanobis):
    r"""Relative Mahalanobis distance: the class-conditional Mahalanobis distance minus that of one background
    Gaussian fitted on all ID-train features.

    .. math::
        \mathrm{MD}_c(h) = (h - \mu_c)^\top \Sigma^{+} (h - \mu_c), \quad
        \mathrm{MD}_0(h) = (h - \mu_0)^\top \Sigma_0^{+} (h - \mu_0), \qquad
        S(x) = -\min_c \big(\mathrm{MD}_c(h) - \mathrm{MD}_0(h)\big) = \mathrm{MD}_0(h) - \min_c \mathrm{MD}_c(h)

    with :math:`\mu_c, \Sigma` the class means and the tied covariance of :class:`Mahalanobis` (its fit is reused
    unchanged) and :math:`\mu_0 = \frac1N\sum_i h_i`, :math:`\Sigma_0 = \frac1N\sum_i (h_i - \mu_0)(h_i -
    \mu_0)^\top` over every ID-train feature, whatever its class. Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan,
    "A simple fix to Mahalanobis distance for improving near-OOD detection", arXiv 2106.09022, 2021
    (RMD; confidence :math:`-\min_k \mathrm{RMD}_k`). Feature layer: the penultimate vector :math:`h`
    (the paper's pre-logit embedding), squared distances (no factor 1/2), pseudo-inverses in float64, as
    :class:`Mahalanobis`. No hyperparameters.
    """

    name = "rmd"
    fit_state = Mahalanobis.fit_state + ("background_mean", "background_precision")

    def fit_features(self, train_pen, train_logits, train_labels, model):
        super().fit_features(train_pen, train_logits, train_labels, model)
        h = train_pen.detach().double()
        self.background_mean = h.mean(dim=0)
        c = h - self.background_mean
        self.background_precision = torch.linalg.pinv(c.T @ c / h.shape[0], hermitian=True)
        return self

    @torch.no_grad()
    def background_distance(self, pen: Tensor) -> Tensor:
        """:math:`\\mathrm{MD}_0(h)` per row (float64)."""
        self._check_fitted("means", "precision")
        c = pen.detach().double() - self.background_mean.to(pen.device)
        return ((c @ self.background_precision.to(pen.device)) * c).sum(dim=1)

    @torch.no_grad()
    def score_features(self, pen, logits=None, model=None):
        return (self.background_distance(pen) - self.class_distances(pen).amin(dim=1)).float()


class NNGuide(Scorer):
    r"""NNGuide: the energy score guided by the similarity to confidence-scaled ID-train features.

    .. math::
        \hat h = \frac{h}{\lVert h\rVert_2}, \quad
        \mathcal B = \{E_i \hat h_i\}_{i \in \mathcal I}, \ E_i = \log\sum_c e^{f_c(x_i)}, \qquad
        S(x) = E(x) \cdot \frac1k \sum_{b \in \mathrm{top}_k(\hat h(x) \cdot \mathcal B)} \hat h(x) \cdot b

    i.e. the energy :math:`E(x) = \log\sum_c e^{f_c(x)}` times the guidance, the mean of the :math:`k` largest
    inner products between the normalized feature and the bank of normalized ID-train features each scaled by
    its own energy (confidence). Park, Jung & Teoh, "Nearest neighbor guidance for out-of-distribution
    detection", ICCV 2023 (the guided score), and their ``nnguide`` code (``F.normalize`` of the penultimate features,
    ``torch.logsumexp`` of the logits as confidence, faiss ``IndexFlatIP`` top-k, mean, times the energy).
    Defaults ``k = 10`` [code: ``configs/detector/nnguide.yaml`` ``knn_k: 10``] and ``bank_ratio = 0.01``, a bank
    of 1 % of ID-train [paper and code: ``bankset_ratio=0.01``, 1 % of ImageNet-1K; OpenOOD's ``nnguide.yml``
    keeps 1 % but uses K = 100]. The bank is ``max(k, floor(N * bank_ratio))`` ID-train features [ours: at least
    ``k``, so a small training set still has k neighbours] drawn without replacement by
    ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))`` on the CPU, so the same subset on any
    device [the code: ``np.random.shuffle`` after seeding 0]; ``bank_ratio = 1`` keeps every feature and no
    draw happens. Exact search in float64 with a running top-k over bank chunks (no faiss).
    """

    name = "nnguide"
    needs_fit = True
    fit_state = ("bank", "bank_index")
    _param_names = ("k", "bank_ratio", "seed")
    query_chunk = 2048
    bank_chunk = 16384

    def __init__(self, k: int = 10, bank_ratio: float = 0.01, seed: int = 0):
        self.k = _check_number(self.name, "k", k, low=1, integer=True)
        self.bank_ratio = _check_number(self.name, "bank_ratio", bank_ratio, low=0, high=1, low_open=True)
        self.seed = _check_number(self.name, "seed", seed, low=0, integer=True)
        self.bank = None

    def bank_indices(self, n_train: int) -> Tensor:
        """The (sorted, CPU) indices of the ID-train features that form the bank."""
        if self.k > n_train:
            raise ValueError(f"invalid value {self.k} for parameter 'k' of scorer 'nnguide': only {n_train} "
                             f"ID-train features; allowed: 1 <= k <= {n_train}")
        n = min(n_train, max(self.k, math.floor(n_train * self.bank_ratio + 1e-9)))
        if n == n_train:
            return torch.arange(n_train)
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.seed))
        return perm[:n].sort().values

    def fit_features(self, train_pen, train_logits, train_labels, model):
        idx = self.bank_indices(train_pen.shape[0]).to(train_pen.device)
        h = train_pen.detach()[idx].double()
        conf = torch.logsumexp(train_logits.detach()[idx].double(), dim=1)
        self.bank = F.normalize(h, dim=1) * conf[:, None]
        self.bank_index = idx.cpu()
        return self

    @torch.no_grad()
    def guidance(self, pen: Tensor) -> Tensor:
        """Mean of the k largest :math:`\\hat h \\cdot b` over the bank, per row (float64)."""
        self._check_fitted("bank")
        bank = self.bank.to(pen.device)
        z = F.normalize(pen.detach().double(), dim=1)
        out = []
        for q in z.split(self.query_chunk):
            best = None
            for start in range(0, bank.shape[0], self.bank_chunk):
                sim = q @ bank[start:start + self.bank_chunk].T
                cand = sim if best is None else torch.cat([best, sim], dim=1)
                best = torch.topk(cand, min(self.k, cand.shape[1]), dim=1).values
            out.append(best.mean(dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def score_features(self, pen, logits, model=None):
        return (self.guidance(pen) * torch.logsumexp(logits.detach().double(), dim=1)).float()


class NECO(Scorer):
    r"""NECO: the relative norm of the feature inside the principal subspace of the ID-train features.

    .. math::
        s(h) = \frac{h - m}{\sigma}, \qquad
        S(x) = \frac{\lVert V_d^\top \big(s(h) - \bar s\big)\rVert_2}{\lVert s(h)\rVert_2}
        \ \big[\times \max_c f_c(x)\big]

    with :math:`m, \sigma` the per-unit mean and standard deviation (ddof 0) of ID-train, :math:`\bar s` the mean
    of the standardized ID-train features (0 up to rounding) and :math:`V_d` the eigenvectors of their covariance
    with the :math:`d` largest eigenvalues (PCA). Neural collapse puts ID features near a simplex ETF spanned by
    the leading principal directions and OOD features closer to its orthogonal complement, so higher = ID. Ben
    Ammar, Belkhir, Popescu, Manzanera & Franchi, "NECO: NEural Collapse based out-of-distribution detection",
    ICLR 2024 (the NECO score) and their code (``ood_methods.neco``: sklearn ``StandardScaler`` then ``PCA``
    fitted on ID-train, ``norm(reduced[:, :d]) / norm(standardized)``).

    * ``standardize = True`` [code: the scaler is applied for every architecture; ``False`` uses :math:`h`
      itself, still centred by the PCA mean in the numerator].
    * ``maxlogit = False`` [code: ``if model_architecture_type != 'resnet'`` multiplies by the max logit, i.e.
      for the ViT/DeiT/Swin transformers, not for the ResNets; our networks are all convolutional]. ``True``
      gives the transformer form (a negative max logit then flips the order, as in the code).
    * ``dim = None`` picks :math:`d = \min(100, \lfloor D/2\rfloor)`: 100 [code: ``--neco_dim`` default 100,
      ViT-B with :math:`D = 768`], capped at :math:`\lfloor D/2\rfloor` for small feature dimensions [ours, the
      ViM rule here; WRN-40-2's D = 128 gives 64, where 100 of 128 directions would leave little residual].
      The paper tunes :math:`d` per model and data set; a ``dim >= D`` raises (the ratio would be 1).

    Not implemented: the code's DeiT/Swin branch, which divides by the norm of the *raw* feature. Fitted in
    float64 (``torch.linalg.eigh`` of the covariance; the projection norm does not depend on the eigenvectors'
    signs); zero-variance units get :math:`\sigma = 1` (sklearn's rule) and a zero :math:`s(h)` scores 0 [ours].
    """

    name = "neco"
    needs_fit = True
    fit_state = ("feature_mean", "feature_std", "pca_mean", "basis", "principal_dim")
    _param_names = ("dim", "standardize", "maxlogit")

    def __init__(self, dim: int | None = None, standardize: bool = True, maxlogit: bool = False):
        self.dim = _check_number(self.name, "dim", dim, low=1, integer=True, allow_none=True)
        self.standardize = _check_bool(self.name, "standardize", standardize)
        self.maxlogit = _check_bool(self.name, "maxlogit", maxlogit)
        self.basis = None

    @staticmethod
    def default_dim(feature_dim: int) -> int:
        return min(100, feature_dim // 2)

    def required_state(self) -> tuple[str, ...]:
        """The per-unit mean and std only when standardizing."""
        return self.fit_state if self.standardize else self.fit_state[2:]

    def _standardized(self, h: Tensor) -> Tensor:
        if not self.standardize:
            return h
        return (h - self.feature_mean.to(h.device)) / self.feature_std.to(h.device)

    def fit_features(self, train_pen, train_logits, train_labels, model):
        h = train_pen.detach().double()
        d_feat = h.shape[1]
        dim = self.default_dim(d_feat) if self.dim is None else self.dim
        if not 1 <= dim < d_feat:
            raise ValueError(f"invalid value {dim} for parameter 'dim' of scorer 'neco': the principal subspace "
                             f"must be smaller than the feature dimension {d_feat}; allowed: 1 <= dim < {d_feat}")
        if self.standardize:
            self.feature_mean = h.mean(dim=0)
            std = h.std(dim=0, correction=0)
            self.feature_std = torch.where(std < 10 * torch.finfo(torch.float64).eps, torch.ones_like(std), std)
        s = self._standardized(h)
        self.pca_mean = s.mean(dim=0)
        c = s - self.pca_mean
        evals, evecs = torch.linalg.eigh(c.T @ c / max(1, h.shape[0] - 1))
        order = torch.argsort(evals, descending=True)
        self.basis = evecs[:, order[:dim]].contiguous()              # (D, d)
        self.principal_dim = dim
        return self

    @torch.no_grad()
    def ratio(self, pen: Tensor) -> Tensor:
        """:math:`\\lVert V_d^\\top (s(h) - \\bar s)\\rVert / \\lVert s(h)\\rVert` per row (float64)."""
        self._check_fitted("basis")
        s = self._standardized(pen.detach().double())
        num = ((s - self.pca_mean.to(s.device)) @ self.basis.to(s.device)).norm(dim=1)
        den = s.norm(dim=1)
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))

    @torch.no_grad()
    def score_features(self, pen, logits, model=None):
        r = self.ratio(pen)
        if self.maxlogit:
            r = r * wide(logits.detach()).double().amax(dim=1)
        return r.float()


# ----------------------------------------------------------------------------------------------
# Registry, defaults and sweeps
# ----------------------------------------------------------------------------------------------

SCORERS: dict[str, type[Scorer]] = {
    "msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "entropy": Entropy, "odin": ODIN,
    "mahalanobis": Mahalanobis, "knn": KNN, "react": ReAct, "ash_p": ASHP, "ash_b": ASHB, "ash_s": ASHS,
    "dice": DICE, "gradnorm": GradNorm, "vim": ViM, "gen": GEN, "scale": SCALE, "fdbd": FDBD, "rmd": RMD,
    "nnguide": NNGuide, "neco": NECO,
}

# Defaults (sources in each class docstring) and, beside each, the values to sweep.
DEFAULTS: dict[str, dict[str, Any]] = {
    "msp": {},
    "maxlogit": {},
    "energy": {"T": 1.0},                              # Liu et al. 2020
    "entropy": {},
    "odin": {"T": 1000.0, "eps": 0.0014},              # ODIN paper (CIFAR); in energy_ood's grid
    "mahalanobis": {},                                 # penultimate layer, no input noise
    "knn": {"k": 50},                                  # Sun et al. 2022, CIFAR-10 (ImageNet: 1000)
    "react": {"percentile": 90.0, "threshold": None},  # Sun et al. 2021
    "ash_p": {"percentile": 90.0},                     # our choice (see ASH)
    "ash_b": {"percentile": 90.0},
    "ash_s": {"percentile": 90.0},
    "dice": {"percentile": 90.0},                      # Sun & Li 2022, CIFAR
    "gradnorm": {"T": 1.0},                            # Huang et al. 2021
    "vim": {"dim": None},                              # ViM code's rule by feature dimension
    "gen": {"gamma": 0.1, "M": 100},                   # Liu et al. 2023 (paper and code); M capped at K
    "scale": {"percentile": 85.0},                     # Xu et al. 2024, SCALE code (and OpenOOD)
    "fdbd": {},                                        # Liu & Qin 2024, no hyperparameters
    "rmd": {},                                         # Ren et al. 2021, penultimate layer
    "nnguide": {"k": 10, "bank_ratio": 0.01, "seed": 0},     # Park et al. 2023 code: knn_k 10, 1 % bank
    "neco": {"dim": None, "standardize": True, "maxlogit": False},  # NECO code; d = min(100, D // 2)
}


def build_scorer(name: str, **params) -> Scorer:
    """Build a registered scorer with its defaults overridden by ``params``.

    Unknown names or parameters raise a ValueError that lists the allowed ones; bad values raise a
    ValueError naming the value and the allowed range.
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; allowed: {', '.join(SCORERS)}")
    allowed = DEFAULTS[name]
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for scorer {name!r}; allowed: "
                         f"{', '.join(allowed) if allowed else '(none)'}")
    return SCORERS[name](**{**allowed, **params})


def profile_scorers(block: dict) -> list[str]:
    """The scorers a profile's pipeline runs: its ``evaluate.scorers`` list when it narrows it, else every registered
    scorer (in :data:`SCORERS` order). An unknown name raises ValueError listing the allowed ones."""
    names = (block.get("evaluate") or {}).get("scorers")
    if names is None:
        return list(SCORERS)
    for n in names:
        check_choice(n, "a scorer of the profile's evaluate.scorers", list(SCORERS))
    return list(names)
