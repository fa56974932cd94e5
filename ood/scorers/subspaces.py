r"""The principal subspace of the ID-train features: ViM (the norm of the residual outside it, against the energy)
and NECO (the share of the feature's norm inside it).

Both eigen-decompose a covariance of ID-train penultimate features in float64 (``torch.linalg.eigh``) and pick the
principal dimension by the feature dimension when it is not given.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ood.numerics import wide
from ood.scorers.base import Scorer, check_flag, check_param, head_weights, register
from ood.scorers.logits import energy

__all__ = ["ViM", "NECO"]


@register(order=14)
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
    formula = r":math:`\log\sum_c e^{f_c} - \alpha \lVert P^\perp (h - o)\rVert`"
    source = "Wang et al. 2022"
    needs_fit = True
    fit_state = ("origin", "residual_basis", "principal_dim", "alpha")

    def __init__(self, dim: int | None = None):
        self.dim = check_param(self.name, "dim", dim, low=0, integer=True, allow_none=True)
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
        w, b = head_weights(model, h.device, torch.float64)
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


@register(order=20)
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
    formula = (r":math:`\lVert P_d\, s(h)\rVert / \lVert s(h)\rVert`, s standardizes, :math:`P_d` the top-d ID-train "
               r"principal components")
    source = "Ammar et al. 2024"
    needs_fit = True
    fit_state = ("feature_mean", "feature_std", "pca_mean", "basis", "principal_dim")

    def __init__(self, dim: int | None = None, standardize: bool = True, maxlogit: bool = False):
        self.dim = check_param(self.name, "dim", dim, low=1, integer=True, allow_none=True)
        self.standardize = check_flag(self.name, "standardize", standardize)
        self.maxlogit = check_flag(self.name, "maxlogit", maxlogit)
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
