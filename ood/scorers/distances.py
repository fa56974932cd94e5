r"""Distances in feature space to what ID-train features fit: class Gaussians (Mahalanobis, RMD), nearest
neighbours (KNN, NNGuide) and the head's decision boundaries (fDBD).

:math:`h` is the penultimate vector. Each scorer fits its statistics on cached ID-train features
(``fit_features``) and scores in float64 where the paper's distance needs it; each distance is negated where its
paper scores "lower = ID", so that higher = more ID here as everywhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ood.numerics import wide
from ood.scorers.base import Scorer, check_param, head_weights, register

__all__ = ["Mahalanobis", "RMD", "KNN", "NNGuide", "FDBD"]


@register(order=6)
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
    formula = r":math:`\max_c -(h-\mu_c)^\top \Sigma^{-1} (h-\mu_c)`, tied :math:`\Sigma`"
    source = "Lee et al. 2018"
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


@register(order=18)
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
    formula = r":math:`\mathrm{MD}_0(h) - \min_c \mathrm{MD}_c(h)` (relative Mahalanobis)"
    source = "Ren et al. 2021"
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


@register(order=7)
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
    formula = r":math:`-\lVert z - z_{(k)}\rVert_2`, :math:`z = h/\lVert h\rVert`, k-th nearest ID-train neighbour"
    source = "Sun et al. 2022"
    needs_fit = True
    fit_state = ("bank", "bank_sq")
    query_chunk = 2048
    bank_chunk = 16384

    def __init__(self, k: int = 50):
        self.k = check_param(self.name, "k", k, low=1, integer=True)
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


@register(order=19)
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
    device, with ``seed = 0`` [the code: ``np.random.shuffle`` after seeding 0]; ``bank_ratio = 1`` keeps every
    feature and no draw happens. Exact search in float64 with a running top-k over bank chunks (no faiss).
    """

    name = "nnguide"
    formula = (r"energy times the mean of the k largest :math:`\hat h \cdot E_i \hat h_i`, a bank of energy-scaled "
               r"ID-train features")
    source = "Park et al. 2023"
    needs_fit = True
    fit_state = ("bank", "bank_index")
    query_chunk = 2048
    bank_chunk = 16384

    def __init__(self, k: int = 10, bank_ratio: float = 0.01, seed: int = 0):
        self.k = check_param(self.name, "k", k, low=1, integer=True)
        self.bank_ratio = check_param(self.name, "bank_ratio", bank_ratio, low=0, high=1, low_open=True)
        self.seed = check_param(self.name, "seed", seed, low=0, integer=True)
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


@register(order=17)
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
    formula = r"mean distance to the predicted class's decision boundaries over :math:`\lVert h - \bar h\rVert`"
    source = "Liu & Qin 2024"
    needs_fit = True
    fit_state = ("boundary_norms", "weight", "bias", "train_mean")

    def __init__(self):
        self.train_mean = None

    def fit_features(self, train_pen, train_logits, train_labels, model):
        h = train_pen.detach().double()
        w, b = head_weights(model, h.device, torch.float64)
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
