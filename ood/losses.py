r"""Loss terms; a training method is a list of them (plus an optional sampler, ``ood.sampling``).

Per step the training loop (``ood.train``) builds one :class:`StepOutputs` from a single forward of
``x = cat(x_id, x_out)`` and calls every term: ``value = term(out)`` is a scalar tensor **already
weighted**; the loop sums the values and back-propagates. ``term.last`` holds detached tensors for
logging (no ``.item()`` inside a term: no host sync in the hot loop).

Energy, everywhere: :math:`E(x) = -\log\sum_c e^{f_c(x)}` (temperature 1, as in the Energy-OE and
GReg code); low energy = ID-like. (Scorers report :math:`-E` so that higher = more ID.)

Terms (``TERMS``; build with :func:`build_term`, parameters checked, defaults and their sources in
each class docstring):

=================  ===========================================================================
``ce``             cross-entropy on the ID logits
``oe``             Outlier Exposure, cross-entropy of the outliers to the uniform distribution
``energy_margin``  Energy-OE squared-hinge margins on the ID / outlier energies
``grad_penalty``   GReg: norm of the input gradient of the energy for samples already on the
                   right side of their margin
``background``     BFM: L2 norm of the local features at background positions of ID images
=================  ===========================================================================

The methods that compose these terms are :data:`ood.methods.METHODS`; :func:`build_terms` builds a list of terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ood.models import OODNet
from ood.numerics import check_choice, check_number, energy, wide

__all__ = [
    "StepOutputs", "LossTerm", "CrossEntropy", "OutlierExposure", "EnergyMargin", "GradPenalty", "BackgroundFeatures",
    "TERMS", "build_term", "build_terms", "energy", "background_mask", "position_logits",
    "grad_penalty_reference",
]


@dataclass
class StepOutputs:
    """Everything one forward of the training step produced; ID samples come first."""

    model: OODNet
    xn: Tensor          # normalized input of the whole batch; requires_grad iff some term needs it
    fmap: Tensor        # last conv map (B_id + B_out, C, H, W)
    pen: Tensor         # penultimate (B_id + B_out, C)
    logits: Tensor      # (B_id + B_out, K)
    y: Tensor           # (B_id,) int64 labels
    n_id: int
    epoch: int = 0      # 0-based current epoch (for warm-ups)
    world_size: int = 1  # processes sharing the global batch (ood.distributed); 1: one process

    @property
    def logits_id(self) -> Tensor:
        return self.logits[: self.n_id]

    @property
    def logits_out(self) -> Tensor:
        return self.logits[self.n_id:]

    @property
    def fmap_id(self) -> Tensor:
        return self.fmap[: self.n_id]

    @property
    def n_out(self) -> int:
        return self.logits.shape[0] - self.n_id


def _zero(t: Tensor) -> Tensor:
    """A zero that stays attached to the graph of ``t`` (backprop gives zero gradients, never NaN)."""
    return wide(t).sum() * 0.0


def _mean_or_zero(v: Tensor) -> Tensor:
    return v.mean() if v.numel() else v.new_zeros(())


def _safe_norm(sq: Tensor) -> Tensor:
    """sqrt of a tensor of squared norms with gradient 0 (not inf / NaN) where the norm is exactly 0: the
    square root is taken only where ``sq > 0`` (mask before sqrt), so the value is exact."""
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


class LossTerm:
    """Base class. Subclasses set ``name``, ``defaults`` (parameter -> default) and implement ``value``.

    ``needs_outliers``: the term reads outliers (the loop then draws ``x_out``).
    ``needs_input_grad``: the term differentiates through ``out.xn`` (the loop sets ``requires_grad``).
    """

    name: str = ""
    needs_outliers: bool = False
    needs_input_grad: bool = False
    defaults: dict[str, Any] = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for loss term {self.name!r}; "
                             f"allowed: {', '.join(self.defaults) or '(none)'}")
        self.params = {**self.defaults, **params}
        for k, v in self.params.items():
            setattr(self, k, v)
        if "weight" in self.params:
            self._check_number("weight", low=0.0)
        self.check()
        self.last: dict[str, Tensor] = {}

    # -- validation helpers ---------------------------------------------------------------------
    def _check_number(self, key, low=None, high=None, low_open=False, integer=False):
        check_number(self.params[key], f"parameter {key!r} of loss term {self.name!r}", low=low, high=high,
                     low_open=low_open, integer=integer)

    def _check_choice(self, key, choices):
        check_choice(self.params[key], f"parameter {key!r} of loss term {self.name!r}", choices)

    def check(self) -> None:
        """Validate ``self.params`` (subclasses); raise ValueError naming the bad value and the allowed ones."""

    def __call__(self, out: StepOutputs) -> Tensor:
        return self.value(out)

    def value(self, out: StepOutputs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


class CrossEntropy(LossTerm):
    r"""``ce``: :math:`w \cdot \frac1{n}\sum_i -\log \mathrm{softmax}(f(x_i))_{y_i}` over the ID samples.

    Default ``weight`` 1 (all papers)."""

    name = "ce"
    defaults = {"weight": 1.0}

    def value(self, out):
        loss = F.cross_entropy(wide(out.logits_id), out.y)
        self.last = {"ce": loss.detach()}
        return self.weight * loss


class OutlierExposure(LossTerm):
    r"""``oe`` (Hendrycks et al., ICLR 2019, "Deep Anomaly Detection with Outlier Exposure", Eq. 1):
    :math:`w \cdot \frac1{n_{out}}\sum_j \big(\log\sum_c e^{f_c(x_j)} - \frac1K\sum_c f_c(x_j)\big)`,
    the cross-entropy from the softmax to the uniform distribution, over the outliers.

    Default ``weight`` 0.5 (paper and OE code, ``0.5 * -(x.mean(1) - logsumexp(x)).mean()``).
    No outliers in the batch: 0."""

    name = "oe"
    needs_outliers = True
    defaults = {"weight": 0.5}

    def value(self, out):
        lo = wide(out.logits_out)
        if lo.shape[0] == 0:
            return _zero(out.logits)
        loss = (torch.logsumexp(lo, 1) - lo.mean(1)).mean()
        self.last = {"oe": loss.detach()}
        return self.weight * loss


class EnergyMargin(LossTerm):
    r"""``energy_margin`` (Liu et al., NeurIPS 2020, "Energy-based Out-of-distribution Detection", Eq. 5):

    .. math:: w\,\Big(\tfrac1{n_{id}}\sum_i \mathrm{relu}(E(x_i) - m_{in})^2
              + \tfrac1{n_{out}}\sum_j \mathrm{relu}(m_{out} - E(x_j))^2\Big)

    Defaults [Energy-OE code ``energy_ood/CIFAR/train.py`` argparse, reused by the GReg code
    ``train_sea.py``]: ``weight`` (:math:`\lambda_S`) 0.1, ``m_in`` -25, ``m_out`` -7. The Energy paper's
    text is reported to use other margins per dataset (CIFAR-100: m_in -27, m_out -5; not verified
    here): set them in params.yaml. Requires ``m_in < m_out``. No outliers: the second mean is 0.
    """

    name = "energy_margin"
    needs_outliers = True
    defaults = {"weight": 0.1, "m_in": -25.0, "m_out": -7.0}

    def check(self):
        self._check_number("m_in")
        self._check_number("m_out")
        if not self.m_in < self.m_out:
            raise ValueError(f"invalid margins m_in={self.m_in!r}, m_out={self.m_out!r} for loss term {self.name!r}; "
                             "allowed: m_in < m_out (ID energies are pushed below m_in, outliers above m_out)")

    def value(self, out):
        e = energy(out.logits)
        e_in, e_out = e[: out.n_id], e[out.n_id:]
        l_in = _mean_or_zero(F.relu(e_in - self.m_in).pow(2))
        l_out = _mean_or_zero(F.relu(self.m_out - e_out).pow(2))
        self.last = {"energy_in": e_in.detach().mean(), "energy_out": _mean_or_zero(e_out.detach()),
                     "margin_in": l_in.detach(), "margin_out": l_out.detach()}
        return self.weight * (l_in + l_out)


# ----------------------------------------------------------------------------------------------
# GReg gradient penalty
# ----------------------------------------------------------------------------------------------

_SCALINGS = ("paper", "authors", "expectation")


def _penalty_coefficients(e: Tensor, n_id: int, m_in: float, m_out: float,
                          scaling: str) -> tuple[Tensor, float, Tensor]:
    """Per-sample coefficients ``c`` (detached, >= 0), the post-factor and the selection mask of the penalty
    ``post * sum_j || d(sum_i c_i E_i) / d xn_j ||``."""
    with torch.no_grad():
        sel = torch.cat([e[:n_id] < m_in, e[n_id:] > m_out])
        b, n_out = e.shape[0], e.shape[0] - n_id
        fsel = sel.to(e.dtype)
        if scaling == "paper":
            c, post = fsel / fsel.sum().clamp_min(1.0), 1.0
        else:
            per = torch.cat([fsel.new_full((n_id,), 1.0 / max(n_id, 1)), fsel.new_full((n_out,), 1.0 / max(n_out, 1))])
            c = fsel * per
            post = 1.0 / b if scaling == "authors" else 1.0
    return c, post, sel


class GradPenalty(LossTerm):
    r"""``grad_penalty``: GReg (Sharifi et al., ECCV 2024, "Gradient-Regularized Out-of-Distribution
    Detection", :math:`\mathcal L_{\nabla S}` of Sec. 3, total loss
    :math:`\mathcal L_{CE} + \lambda_S\mathcal L_S + \lambda_{\nabla S}\mathcal L_{\nabla S}`).

    The norm of the input gradient of the energy score, only for samples already on the right side of
    their margin (ID with :math:`E < m_{in}`, outliers with :math:`E > m_{out}`; strict, as the authors'
    ``relu`` whose derivative is 0 at the margin). :math:`S = -E` or :math:`E` give the same norm (the
    authors' code differentiates the energy). The gradient is taken w.r.t. the **normalized** input
    ``xn`` (the authors' ``data`` is the normalized tensor). With :math:`g_j` the gradient of
    :math:`\sum_i c_i E_i` w.r.t. sample :math:`j`'s input:

    .. math:: \mathcal L_{\nabla S} = \text{post}\cdot\sum_j \lVert g_j \rVert_2, \qquad
              g_j = \partial\big(\textstyle\sum_i c_i E(x_i)\big) / \partial x_j

    ``scaling`` (all equal up to a constant factor per batch composition):

    * ``"authors"`` (default): exactly what ``train_sea.py`` of github.com/o4lc/Greg-OOD computes with
      ``--jacobianLoss weight``: the jacobian (a gradient, the function is scalar) of
      :math:`-\mathrm{mean}_{id}\,\mathrm{relu}(m_{in}-E) + \mathrm{mean}_{out}\,\mathrm{relu}(E-m_{out})`
      w.r.t. the whole batch, per-row L2 norms, mean over all :math:`B` rows. Per selected sample that
      is :math:`\lVert\nabla E\rVert / (n_{id} B)` (ID) or :math:`/(n_{out} B)` (outliers). So ``weight``
      is the paper's :math:`\lambda_{\nabla S}` in the units the authors ran it (``--jacobianLoss 1`` in
      every GReg/GReg+ script): writing the paper's lambda gives the paper's regularization.
    * ``"paper"`` (an ablation; our earlier reading of the paper's "mean norm over the selected samples"):
      :math:`c_i = 1/n_{sel}` for selected samples, post 1, i.e. the mean of
      :math:`\lVert\nabla E(x_i)\rVert` over the selected samples: :math:`n_{grp} B / n_{sel}` times
      "authors" (about 64x-128x on the papers' batches when every sample is selected, more when few are).
    * ``"expectation"``: :math:`\mathrm{mean}_{id}[\mathbb 1\lVert\nabla E\rVert] +
      \mathrm{mean}_{out}[\mathbb 1\lVert\nabla E\rVert]` (indicators inside the two expectations),
      which is :math:`B` times "authors".

    **One backward, reusing the training forward.** The term calls
    ``torch.autograd.grad((c * E).sum(), out.xn, create_graph=True)`` once. Without interaction between
    samples (eval-mode BatchNorm, no BN) row :math:`j` is exactly :math:`c_j \nabla E(x_j)`, the
    per-sample gradient. **With BatchNorm in train mode** the batch statistics couple the samples and
    row :math:`j` also holds :math:`\sum_{i\ne j} c_i\,\partial E_i/\partial x_j`. We accept this
    (option (a)): it is *the same quantity the authors' code computes* - their second forward through
    ``torch.autograd.functional.jacobian`` runs BN in train mode too, and the jacobian of their scalar is
    exactly this gradient - so "authors" reproduces their penalty exactly (tested) at the cost of one
    double-backward instead of a second forward (which, in addition, updates the BN running statistics
    twice per step). An exact per-sample gradient under train-mode BN would need B backward passes or
    ``torch.func`` per-sample vmaps with frozen batch statistics, both much slower; the cross terms
    are :math:`O(1/B)` per pair.

    Under DDP (``out.world_size`` W > 1, each process holding B/W rows) the coefficients come from the shard's
    counts, W times the global batch's, so the penalty is divided by W: the average over the processes is then the
    penalty of the global batch (exactly so without train-mode BatchNorm coupling the rows; ``ood.distributed``).

    Safe norm: rows whose gradient is exactly 0 (nothing selected, eval mode) get norm 0 with gradient 0
    (square root only where the squared norm is positive), so an empty selection gives a penalty of 0
    that back-propagates zeros, never NaN.

    Precision: the gradient is computed in the dtype of the forward; under bf16 autocast the relative
    error of the penalty stays well below 1e-2 on the test models (tested); the energy itself is
    computed in float32.

    Defaults: ``weight`` (:math:`\lambda_{\nabla S}`) 1 [paper, CIFAR; GReg scripts ``--jacobianLoss 1``],
    ``m_in`` -25, ``m_out`` -7 [GReg code argparse, the Energy-OE code's values]; ``scaling`` "authors"
    [code: Greg-OOD ``train_sea.py``, the penalty their runs used; tests/test_grad_penalty_oracle.py].
    """

    name = "grad_penalty"
    needs_outliers = False  # works on ID alone; with outliers it also penalizes them
    needs_input_grad = True
    defaults = {"weight": 1.0, "m_in": -25.0, "m_out": -7.0, "scaling": "authors"}

    def check(self):
        self._check_number("m_in")
        self._check_number("m_out")
        self._check_choice("scaling", _SCALINGS)

    def value(self, out):
        if not out.xn.requires_grad:
            raise ValueError("grad_penalty needs out.xn.requires_grad=True (the training loop sets it when a term has "
                             "needs_input_grad); got an input without gradient")
        e = energy(out.logits)
        c, post, sel = _penalty_coefficients(e.detach(), out.n_id, self.m_in, self.m_out, self.scaling)
        (g,) = torch.autograd.grad((c.to(e.dtype) * e).sum(), out.xn, create_graph=True)
        norms = _safe_norm(wide(g).pow(2).flatten(1).sum(1))
        pen = post * norms.sum()
        if out.world_size > 1:   # a shard's means over B/W rows make each row's gradient W times the global one
            pen = pen / out.world_size
        self.last = {"grad_penalty": pen.detach(), "selected_in": sel[: out.n_id].float().mean(),
                     "selected_out": _mean_or_zero(sel[out.n_id:].float())}
        return self.weight * pen


def grad_penalty_reference(model: OODNet, x_id: Tensor, x_out: Tensor | None = None, *, m_in: float = -25.0,
                           m_out: float = -7.0, scaling: str = "authors", weight: float = 1.0) -> Tensor:
    """The GReg penalty computed the authors' way: a **second forward** inside
    ``torch.autograd.functional.jacobian(f, xn, create_graph=True)`` (github.com/o4lc/Greg-OOD,
    ``train_sea.py``), per-row L2 norms of the jacobian. For ``scaling="authors"`` ``f`` is their scalar
    ``-mean relu(m_in - E_id) + mean relu(E_out - m_out)`` and the norms are averaged over the batch;
    for the other scalings ``f = sum_i c_i E_i`` with the coefficients of :class:`GradPenalty`.
    Used by the tests (equality with :class:`GradPenalty`) and the speed benchmark. Returns the weighted
    penalty (differentiable w.r.t. the parameters)."""
    if scaling not in _SCALINGS:
        raise ValueError(f"invalid value {scaling!r} for scaling; allowed: {', '.join(map(repr, _SCALINGS))}")
    x = x_id if x_out is None or x_out.shape[0] == 0 else torch.cat([x_id, x_out])
    n_id = x_id.shape[0]
    xn = model.normalize(x)

    def f(inp):
        e = energy(model.head(model.pool(model.body(inp))))
        if scaling == "authors":
            e_in, e_out = e[:n_id], e[n_id:]
            return -_mean_or_zero(F.relu(m_in - e_in)) + _mean_or_zero(F.relu(e_out - m_out))
        c, _, _ = _penalty_coefficients(e.detach(), n_id, m_in, m_out, scaling)
        return (c * e).sum()

    jac = torch.autograd.functional.jacobian(f, xn, create_graph=True)
    norms = _safe_norm(jac.reshape(jac.shape[0], -1).pow(2).sum(1))
    post = 1.0 / x.shape[0] if scaling == "authors" else 1.0
    return weight * post * norms.sum()


# ----------------------------------------------------------------------------------------------
# BFM background features
# ----------------------------------------------------------------------------------------------

def position_logits(fmap: Tensor, fc: torch.nn.Linear) -> Tensor:
    r"""Per-position logits :math:`W f_{hw} + b`, shape ``(B, K, H, W)``. Their spatial mean equals the
    image logits ``fc(pool(fmap))`` (GAP and the linear head commute), so each position's feature
    stands for its local patch (BFM, Sec. 3)."""
    w = fc.weight.to(fmap.dtype)
    out = torch.einsum("bchw,kc->bkhw", fmap, w)
    if fc.bias is not None:
        out = out + fc.bias.to(fmap.dtype).view(1, -1, 1, 1)
    return out


_SELECTIONS = ("ratio", "prob_threshold")
_SCORES = ("logit", "softmax")
_NORMS = ("l2", "l2sq", "hinge")


@torch.no_grad()
def background_mask(fmap: Tensor, fc: torch.nn.Linear, y: Tensor, selection: str = "ratio", ratio: float = 0.25,
                    threshold: float = 0.1, score: str = "logit") -> Tensor:
    """Background positions of each image, a bool mask ``(B, H, W)``.

    The score of a position is its ground-truth-class logit (``score="logit"``) or softmax probability
    (``"softmax"``) from :func:`position_logits`. ``selection="ratio"``: the ``ceil(ratio * H * W)``
    positions with the lowest score in each image (at least 1); ``"prob_threshold"``: the positions whose
    score is below ``threshold`` (may be none). Ties at the cut are broken by position order.
    """
    if selection not in _SELECTIONS:
        raise ValueError(f"invalid value {selection!r} for selection; allowed: {', '.join(map(repr, _SELECTIONS))}")
    if score not in _SCORES:
        raise ValueError(f"invalid value {score!r} for score; allowed: {', '.join(map(repr, _SCORES))}")
    pl = position_logits(wide(fmap), fc)
    if score == "softmax":
        pl = pl.softmax(1)
    b, _, h, w = pl.shape
    s = pl.gather(1, y.view(-1, 1, 1, 1).expand(b, 1, h, w)).view(b, h * w)
    if selection == "prob_threshold":
        return (s < threshold).view(b, h, w)
    k = max(1, min(h * w, int(-(-ratio * h * w // 1))))
    idx = s.topk(k, dim=1, largest=False, sorted=False).indices
    mask = torch.zeros(b, h * w, dtype=torch.bool, device=fmap.device)
    mask.scatter_(1, idx, True)
    return mask.view(b, h, w)


class BackgroundFeatures(LossTerm):
    r"""``background``: BFM (Ye et al., arXiv 2510.12259, "Local Background Features Matter in
    Out-of-Distribution Detection").

    Each position of the last conv map of an ID training image is a local feature :math:`f_{hw}` whose
    logits :math:`W f_{hw} + b` average exactly to the image logits (:func:`position_logits`). Positions
    that do not look like the image's ground-truth class are background, i.e. fake OOD features; the
    term lowers their norm:

    .. math:: w \cdot \frac{1}{|\mathcal B|}\sum_{(b,h,w)\in\mathcal B} \rho(\lVert f_{b,hw}\rVert_2),\quad
              \rho(t) = t \;(\text{"l2"}),\; t^2 \;(\text{"l2sq"}),\; \mathrm{relu}(t - \text{margin})
              \;(\text{"hinge"})

    with :math:`\mathcal B` the background positions of :func:`background_mask` (chosen under no_grad).

    Paper vs. our choices: the idea (background positions of ID images from the ground-truth class'
    local predictions, reducing the L2 norm of their features) is the paper's (abstract, Sec. 3). We
    could not retrieve the paper's exact selection rule, norm form and weights; so ``selection``,
    ``ratio`` 0.25, ``threshold`` 0.1, ``score`` "logit", ``norm`` "l2", ``margin`` 0, ``weight`` 0.1 and
    ``warmup_epochs`` 0 are **our choices** (defaults that train stably on the CPU profile), each exposed
    for ablation. The term is 0 before epoch ``warmup_epochs`` and when nothing is selected.
    """

    name = "background"
    defaults = {"weight": 0.1, "selection": "ratio", "ratio": 0.25, "threshold": 0.1, "score": "logit",
                "norm": "l2", "margin": 0.0, "warmup_epochs": 0}

    def check(self):
        self._check_choice("selection", _SELECTIONS)
        self._check_choice("score", _SCORES)
        self._check_choice("norm", _NORMS)
        self._check_number("ratio", low=0.0, high=1.0, low_open=True)
        self._check_number("threshold")
        self._check_number("margin", low=0.0)
        self._check_number("warmup_epochs", low=0, integer=True)

    def value(self, out):
        fm = out.fmap_id
        if out.epoch < self.warmup_epochs or fm.shape[0] == 0:
            return _zero(out.fmap)
        mask = background_mask(fm, out.model.fc, out.y, self.selection, self.ratio, self.threshold, self.score)
        sq = wide(fm).pow(2).sum(1)  # (B, H, W)
        norms = _safe_norm(sq)
        if self.norm == "l2sq":
            vals = sq
        elif self.norm == "hinge":
            vals = F.relu(norms - self.margin)
        else:
            vals = norms
        m = mask.to(vals.dtype)
        loss = (vals * m).sum() / m.sum().clamp_min(1.0)
        with torch.no_grad():
            fg = (~mask).to(vals.dtype)
            self.last = {"background": loss.detach(), "bg_norm": (norms * m).sum() / m.sum().clamp_min(1.0),
                         "fg_norm": (norms * fg).sum() / fg.sum().clamp_min(1.0), "bg_fraction": m.mean()}
        return self.weight * loss


TERMS: dict[str, type[LossTerm]] = {
    "ce": CrossEntropy, "oe": OutlierExposure, "energy_margin": EnergyMargin, "grad_penalty": GradPenalty,
    "background": BackgroundFeatures,
}

def build_term(name: str, **params) -> LossTerm:
    """A loss term by name with its parameters; unknown names, parameters or bad values raise ValueError."""
    if name not in TERMS:
        raise ValueError(f"unknown loss term {name!r}; allowed: {', '.join(TERMS)}")
    return TERMS[name](**params)


def build_terms(spec: list[str], params: dict[str, dict] | None = None) -> list[LossTerm]:
    """Terms of a composition, e.g. ``build_terms(ood.methods.METHODS["greg"].terms, {"grad_penalty": {"m_in": -12}})``.
    ``params`` may only name terms of ``spec``."""
    params = dict(params or {})
    extra = sorted(set(params) - set(spec))
    if extra:
        raise ValueError(f"parameters given for term(s) {', '.join(map(repr, extra))} not in the composition; "
                         f"allowed: {', '.join(spec)}")
    return [build_term(n, **(params.get(n) or {})) for n in spec]
