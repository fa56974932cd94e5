r"""Energy of reshaped activations or weights: ReAct, ASH-P/B/S, SCALE (the penultimate vector :math:`h`) and DICE
(the last layer's weights).

Each scores :math:`\log\sum_c \exp(W' h' + b)_c`, the energy score of the model's head applied after a change of
:math:`h` (clipped, pruned, binarized or scaled) or of :math:`W` (sparsified). The per-sample shapings are pure
functions (:func:`ash_p`, :func:`ash_b`, :func:`ash_s`, :func:`scale`, on ``(B, D)`` features) that share the top-k
rule of the ASH code; ReAct and DICE fit one statistic on ID-train features (a percentile).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ood.numerics import wide
from ood.scorers.base import Scorer, check_param, head_weights, percentile_of, register
from ood.scorers.logits import energy

__all__ = ["ash_p", "ash_b", "ash_s", "scale", "ReAct", "ASH", "ASHP", "ASHB", "ASHS", "SCALE", "DICE"]


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


@register(order=8)
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
    formula = r"energy of :math:`W\min(h, c) + b`, c = 90th percentile of ID activations"
    source = "Sun et al. 2021"
    needs_fit = True
    fit_state = ("threshold",)

    def __init__(self, percentile: float = 90.0, threshold: float | None = None):
        self.percentile = check_param(self.name, "percentile", percentile, low=0, high=100)
        self.threshold = check_param(self.name, "threshold", threshold, allow_none=True, allow_inf=True)
        self._fixed = threshold is not None

    def fit_features(self, train_pen, train_logits, train_labels, model):
        if not self._fixed:
            self.threshold = percentile_of(train_pen, self.percentile)
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
    _shape = staticmethod(ash_p)

    def __init__(self, percentile: float = 90.0):
        self.percentile = check_param(self.name, "percentile", percentile, low=0, high=100, high_open=True)

    @torch.no_grad()
    def score_features(self, pen, logits, model):
        return energy(model.head(type(self)._shape(pen, self.percentile)))


@register(order=9)
class ASHP(ASH):
    __doc__ = ASH.__doc__
    name = "ash_p"
    formula = r"energy of :math:`W\,\mathrm{ASH}(h) + b`, the top k entries of h kept (prune)"
    source = "Djurisic et al. 2023"
    _shape = staticmethod(ash_p)


@register(order=10)
class ASHB(ASH):
    __doc__ = ASH.__doc__
    name = "ash_b"
    formula = r"energy of :math:`W\,\mathrm{ASH}(h) + b`, the kept entries set to :math:`s_1/k` (binarize)"
    source = "Djurisic et al. 2023"
    _shape = staticmethod(ash_b)


@register(order=11)
class ASHS(ASH):
    __doc__ = ASH.__doc__
    name = "ash_s"
    formula = r"energy of :math:`W\,\mathrm{ASH}(h) + b`, the pruned h times :math:`e^{s_1/s_2}` (scale)"
    source = "Djurisic et al. 2023"
    _shape = staticmethod(ash_s)


@register(order=16)
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
    formula = r"energy of :math:`W e^{s_1/s_2} h + b` (scaled, not pruned)"
    source = "Xu et al. 2024"

    def __init__(self, percentile: float = 85.0):
        self.percentile = check_param(self.name, "percentile", percentile, low=0, high=100, high_open=True)

    @torch.no_grad()
    def score_features(self, pen, logits, model):
        return energy(model.head(scale(wide(pen.detach()), self.percentile).to(pen.dtype)))


@register(order=12)
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
    formula = r"energy of :math:`(M \odot W) h + b`, M keeps the top contributions"
    source = "Sun & Li 2022"
    needs_fit = True
    fit_state = ("mask", "weight", "bias")

    def __init__(self, percentile: float = 90.0):
        self.percentile = check_param(self.name, "percentile", percentile, low=0, high=100, high_open=True)
        self.weight = None

    def fit_features(self, train_pen, train_logits, train_labels, model):
        w, b = head_weights(model, train_pen.device, torch.float64)
        mean_act = train_pen.detach().double().mean(dim=0)
        contrib = mean_act[None, :] * w
        if self.percentile == 0:
            mask = torch.ones_like(contrib, dtype=torch.bool)
        else:
            mask = contrib > percentile_of(contrib, self.percentile)
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
