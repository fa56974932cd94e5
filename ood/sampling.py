r"""Samplers of auxiliary outliers: which ``n_out`` of a candidate pool enter the training step.

The training loop draws ``pool_factor * n_id`` candidate images (augmented, float in [0, 1]) and calls
``sampler.select(model, candidates, n_out, generator)``, which returns ``n_out`` indices into the pool.

* ``random``: uniform.
* ``energy_cluster`` (GReg+, Sharifi et al., ECCV 2024, Sec. 3.3 and Algorithm 1): cluster the
  L2-normalized penultimate features of the pool with k-means; from each cluster take the
  lowest-energy candidate (the most ID-like: informative for the energy margin) and the
  highest-energy one (already OOD-like: what the gradient penalty smooths), then fill up at random.
* ``dos`` (Jiang et al., ICLR 2024, "Diversified Outlier Sampling"): the same clustering, one pick per
  cluster, the candidate closest to the ID boundary (lowest energy), after dropping the most ID-like
  few of the pool; DOS is the one-way special case of the GReg+ sampler.

Everything runs on the candidates' device without host synchronisation; random draws come from
the given CPU ``torch.Generator`` (moved to the device as tensors), so a run is reproducible.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ood.models import OODNet
from ood.numerics import check_choice, check_number, energy, eval_mode

__all__ = ["Sampler", "RandomSampler", "EnergyClusterSampler", "DOSSampler", "SAMPLERS", "build_sampler", "kmeans",
           "cluster_picks", "FEATURE_NORMS", "normalize_features", "pool_size"]


def _rand(n: int, generator: torch.Generator | None, device) -> Tensor:
    """``n`` uniforms in [0, 1) drawn on the CPU from ``generator`` (CPU generators work for any device)."""
    return torch.rand(n, generator=generator).to(device)


def _sq_dists(x: Tensor, c: Tensor) -> Tensor:
    """Squared Euclidean distances ``(N, k)`` by ``|x|^2 - 2 x c^T + |c|^2`` (one matmul), clamped at 0."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)[None]).clamp_min_(0)


def _seed_centers(xf: Tensor, k: int, local_trials: int, generator: torch.Generator | None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first center uniformly, each next one drawn with
    probability proportional to the squared distance to the nearest chosen center (inverse CDF on uniforms from
    ``generator``). ``local_trials`` > 1 is the greedy variant of sklearn's ``kmeans_plusplus``: draw that many
    candidates and keep the one that lowers the potential (the sum of squared distances) most."""
    n, dev = xf.shape[0], xf.device
    u = _rand(1 + (k - 1) * local_trials, generator, dev).to(xf.dtype)
    first = (u[0] * n).long().clamp_(max=n - 1)
    centers = xf.new_empty(k, xf.shape[1])
    centers[0] = xf.index_select(0, first.reshape(1))[0]
    d2 = _sq_dists(xf, centers[:1])[:, 0]
    ramp = torch.arange(1, n + 1, device=dev, dtype=xf.dtype)
    for j in range(1, k):
        cdf = d2.cumsum(0)
        total = cdf[-1]
        uj = u[1 + (j - 1) * local_trials: 1 + j * local_trials]
        # all points coincide with a center: fall back to uniform
        target = torch.where(total > 0, uj * total, uj * n)
        cdf = torch.where(total > 0, cdf, ramp)
        idx = torch.searchsorted(cdf, target, right=True).clamp_(max=n - 1)
        if local_trials == 1:
            centers[j] = xf.index_select(0, idx)[0]
            d2 = torch.minimum(d2, _sq_dists(xf, centers[j:j + 1])[:, 0])
        else:
            cand = torch.minimum(d2[None], _sq_dists(xf, xf.index_select(0, idx)).T)   # (trials, N)
            best = cand.sum(1).argmin()
            centers[j] = xf.index_select(0, idx[best].reshape(1))[0]
            d2 = cand[best]
    return centers


def _lloyd(xf: Tensor, centers: Tensor, iters: int, tol: float | None) -> tuple[Tensor, Tensor, Tensor]:
    """Lloyd steps from ``centers``: at most ``iters``; with ``tol`` (an absolute threshold on the summed squared
    center shift, as sklearn's) stop early at a fixed point of the labels or when the shift is at most ``tol``.
    A cluster that becomes empty keeps its center. Returns labels, centers, inertia."""
    k = centers.shape[0]
    d = _sq_dists(xf, centers)
    labels = d.argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(centers).index_add_(0, labels, xf)
        counts = torch.bincount(labels, minlength=k).to(xf.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)
        d = _sq_dists(xf, new)
        new_labels = d.argmin(1)
        if tol is not None:   # a host sync per step (sklearn's test)
            shift = float(((new - centers) ** 2).sum())
            if torch.equal(new_labels, labels) or shift <= tol:
                centers, labels = new, new_labels
                break
        centers, labels = new, new_labels
    inertia = d.gather(1, labels[:, None]).sum()
    return labels, centers, inertia


def kmeans(x: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None, *, n_init: int = 1,
           tol: float | None = None, local_trials: int = 1) -> tuple[Tensor, Tensor]:
    r"""k-means of ``x`` ``(N, D)`` into ``k`` clusters, pure torch on ``x``'s device; returns ``labels (N,)`` int64
    and ``centers (k, D)``.

    Minimizes the inertia :math:`\sum_i \lVert x_i - c_{l_i}\rVert^2` by Lloyd's algorithm from a k-means++ seeding
    (:func:`_seed_centers`; ``local_trials`` > 1: greedy k-means++), ``n_init`` times from independent seedings,
    keeping the run of lowest inertia. ``tol`` None: exactly ``iters`` Lloyd steps, no convergence test (no host
    sync). ``tol`` a number: sklearn's stopping rule, at most ``iters`` steps, stop when the labels no longer
    change or the summed squared shift of the centers is at most ``tol * mean(var(x, axis=0))``.

    The GReg+ code (Greg-OOD ``train_sea.py:139``) calls sklearn's ``KMeans(n_clusters=k, n_init=3)``: greedy
    k-means++ with ``2 + int(ln k)`` local trials, ``max_iter`` 300, ``tol`` 1e-4, best of 3; that is
    ``kmeans(x, k, 300, g, n_init=3, tol=1e-4, local_trials=2 + int(math.log(k)))``, the defaults of
    :class:`EnergyClusterSampler`. With ``n_init`` 1, ``tol`` None and ``local_trials`` 1 this is one plain
    k-means++ seeding and ``iters`` steps (the synthetic profile's fast setting).
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans expects x of shape (N, D), got {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"invalid number of clusters k={k} for {n} points; allowed: 1 <= k <= N")
    if iters < 0:
        raise ValueError(f"invalid iters={iters}; allowed: >= 0")
    if n_init < 1 or local_trials < 1:
        raise ValueError(f"invalid n_init={n_init} or local_trials={local_trials}; allowed: integers >= 1")
    if tol is not None and not tol >= 0:
        raise ValueError(f"invalid tol={tol}; allowed: None or a number >= 0")
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    abs_tol = None if tol is None else tol * float(xf.var(0, unbiased=False).mean())
    best = None
    for _ in range(n_init):
        run = _lloyd(xf, _seed_centers(xf, k, local_trials, generator), iters, abs_tol)
        if best is None or (n_init > 1 and bool(run[2] < best[2])):
            best = run
    return best[0], best[1]


def cluster_picks(energies: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per cluster, the index of the lowest- and of the highest-energy member, and whether it is non-empty.

    Returns ``(lowest (k,), highest (k,), nonempty (k,) bool)``; entries of empty clusters are 0 and must be
    masked with ``nonempty``. Vectorised: sort by energy, then stably by cluster.
    """
    order = energies.argsort()
    order = order[labels[order].argsort(stable=True)]
    counts = torch.bincount(labels, minlength=k)
    starts = counts.cumsum(0) - counts
    n = energies.shape[0]
    lowest = order[starts.clamp(max=n - 1)]
    highest = order[(starts + counts - 1).clamp(min=0, max=n - 1)]
    nonempty = counts > 0
    return torch.where(nonempty, lowest, 0), torch.where(nonempty, highest, 0), nonempty


#: How the pool's penultimate features are normalized before k-means (Greg-OOD ``train_sea.py:110-119``, ``--repr``):
#: ``row``: each feature vector to unit L2 norm (their default ``norm``); ``column``: each feature dimension to unit
#: L2 norm over the pool (``normFeature``, their CIFAR-100 WRN script ``Scripts/normFeat.sh``); ``batch_mean``: all
#: vectors divided by the pool's mean L2 norm (``normBatch``, their CIFAR-100 ResNet-18 script; one scale for the
#: whole pool, so k-means sees the raw geometry); ``none``: the raw features (``latent``).
FEATURE_NORMS = ("row", "column", "batch_mean", "none")


def normalize_features(z: Tensor, how: str) -> Tensor:
    """``z`` ``(N, C)`` normalized as :data:`FEATURE_NORMS` describes."""
    if how == "row":
        return F.normalize(z, dim=1)
    if how == "column":
        return F.normalize(z, dim=0)
    if how == "batch_mean":
        return z / z.norm(dim=1).mean()
    if how == "none":
        return z
    raise ValueError(f"unknown feature normalization {how!r}; allowed: {', '.join(FEATURE_NORMS)}")


def pool_size(sampler: "Sampler", n_id: int, n_aux: int | None = None, n_id_train: int | None = None) -> int:
    """Candidates scored per step: ``int(min(candidates_per_epoch, n_aux) / n_id_train * n_id)`` when the sampler
    sets ``candidates_per_epoch`` (Greg-OOD ``train_sea.py:330-333``, ``--size_candidate_ood``; on CIFAR with 300K
    outliers and batch 64 that is 384, as ``pool_factor`` 6), else ``pool_factor * n_id``."""
    c = getattr(sampler, "candidates_per_epoch", None)
    if c is None or n_aux is None or not n_id_train:
        return sampler.pool_factor * n_id
    return max(1, int(min(c, n_aux) / n_id_train * n_id))


class Sampler:
    """Base class: ``select(model, candidates, n_out, generator) -> (n_out,)`` int64 indices into the pool."""

    name: str = ""
    pool_factor: int = 1

    def select(self, model: OODNet, candidates: Tensor, n_out: int,
               generator: torch.Generator | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_pool(self, candidates: Tensor, n_out: int) -> None:
        if n_out < 0 or n_out > candidates.shape[0]:
            raise ValueError(f"sampler {self.name!r} cannot pick n_out={n_out} of {candidates.shape[0]} candidates; "
                             f"allowed: 0 <= n_out <= pool size (raise pool_factor={self.pool_factor})")


def _check_int(sampler: str, key: str, v, low: int, allow_none: bool = False):
    check_number(v, f"parameter {key!r} of sampler {sampler!r}", low=low, integer=True, strict=True,
                 allow_none=allow_none)


class RandomSampler(Sampler):
    """``random``: ``n_out`` distinct candidates uniformly at random (the OE / Energy-OE protocol).
    ``pool_factor`` 1 (our choice: the pool is already a random draw)."""

    name = "random"

    def __init__(self, pool_factor: int = 1):
        _check_int(self.name, "pool_factor", pool_factor, 1)
        self.pool_factor = pool_factor

    def select(self, model, candidates, n_out, generator=None):
        self._check_pool(candidates, n_out)
        return _rand(candidates.shape[0], generator, candidates.device).argsort()[:n_out]


class EnergyClusterSampler(Sampler):
    r"""``energy_cluster``: GReg+ energy-based sampling (Sharifi et al., ECCV 2024, Algorithm 1).

    1. Forward the pool **in eval mode** under no_grad (the authors' ``train_sea.py`` calls
       ``clf.eval()`` before sampling; the model's mode is restored afterwards): energies
       :math:`E = -\log\sum e^{f}` and penultimate features :math:`z`, normalized :math:`z/\lVert z\rVert`
       (their default ``--repr norm``).
    2. k-means (:func:`kmeans`) into ``k`` clusters; ``k = num_clusters``, default ``n_out // 2`` when
       ``two_way`` else ``n_out``.
    3. From each cluster the lowest-energy candidate (for the energy margin: the most ID-like outliers)
       and, if ``two_way``, also the highest-energy one (for the gradient penalty: outliers already
       above the margin); a one-member cluster gives one pick.
    4. Fill up to ``n_out`` uniformly at random from the candidates not picked. If there are more picks
       than ``n_out`` (``num_clusters`` set too large), lowest-energy picks are kept first.

    Reconciling the sources: the paper says k = the ID batch size and two picks per cluster; the
    authors' GReg+ runs (``--sampleTwoWay``, ID batch 64, pool 384 = 300K / 50K * 64, ``num_cluster``
    64, ``size_factor_sampled_ood`` 1) therefore train on ``2 * 64 = 128`` outliers per step. With
    ``out_batch_size = 2 * batch_size`` our default ``k = n_out // 2`` is exactly that protocol.
    ``skip_fraction`` drops that fraction of the lowest-energy candidates before clustering (the GReg+
    runs use ``--spt 0``: nothing dropped). Defaults: ``pool_factor`` 6 [GReg+ protocol: 300K / 50K * 64 = 384],
    ``two_way`` True [GReg+ scripts], ``feature_norm`` row [Greg-OOD ``--repr norm``], and k-means as
    Greg-OOD's sklearn ``KMeans(n_init=3)`` (``train_sea.py:139``): ``n_init`` 3, ``kmeans_iters`` 300 and
    ``kmeans_tol`` 1e-4 (sklearn's ``max_iter`` and ``tol``), ``local_trials`` None = sklearn's greedy k-means++
    with ``2 + int(ln k)`` trials [code]. ``candidates_per_epoch`` (their ``--size_candidate_ood``; None: use
    ``pool_factor``) sizes the pool as their code does, from the sizes of the auxiliary and ID training sets
    (:func:`pool_size`; the ImageNet profile's 1,000,000).
    """

    name = "energy_cluster"

    def __init__(self, pool_factor: int = 6, num_clusters: int | None = None, two_way: bool = True,
                 kmeans_iters: int = 300, n_init: int = 3, kmeans_tol: float | None = 1e-4,
                 local_trials: int | None = None, feature_norm: str = "row", skip_fraction: float = 0.0,
                 candidates_per_epoch: int | None = None, eval_mode: bool = True):
        _check_int(self.name, "pool_factor", pool_factor, 1)
        _check_int(self.name, "num_clusters", num_clusters, 1, allow_none=True)
        _check_int(self.name, "kmeans_iters", kmeans_iters, 0)
        _check_int(self.name, "n_init", n_init, 1)
        _check_int(self.name, "local_trials", local_trials, 1, allow_none=True)
        _check_int(self.name, "candidates_per_epoch", candidates_per_epoch, 1, allow_none=True)
        what = lambda key: f"parameter {key!r} of sampler {self.name!r}"
        for key, v in (("two_way", two_way), ("eval_mode", eval_mode)):
            check_choice(v, what(key), (True, False))
        check_number(kmeans_tol, what("kmeans_tol"), low=0, allow_none=True)   # None: exactly kmeans_iters steps
        check_choice(feature_norm, what("feature_norm"), FEATURE_NORMS)
        check_number(skip_fraction, what("skip_fraction"), low=0, high=1, high_open=True)
        self.pool_factor, self.num_clusters, self.two_way = pool_factor, num_clusters, two_way
        self.kmeans_iters, self.n_init, self.local_trials = kmeans_iters, n_init, local_trials
        self.kmeans_tol = None if kmeans_tol is None else float(kmeans_tol)
        self.feature_norm, self.candidates_per_epoch = feature_norm, candidates_per_epoch
        self.skip_fraction, self.eval_mode = float(skip_fraction), eval_mode
        self.last: dict[str, Tensor] = {}

    @torch.no_grad()
    def score(self, model: OODNet, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Energies ``(N,)`` and penultimate features ``(N, C)`` of the pool, the features normalized as
        ``feature_norm`` says (:data:`FEATURE_NORMS`); eval mode if ``eval_mode`` (the model's mode is restored)."""
        with eval_mode(model) if self.eval_mode else contextlib.nullcontext():
            pen = model.pool(model.features(candidates))
            logits = model.head(pen)
        e = energy(logits.float())
        return e, normalize_features(pen.float(), self.feature_norm)

    def pick(self, energies: Tensor, feats: Tensor, n_out: int, generator: torch.Generator | None = None) -> Tensor:
        """Steps 2-4 on given energies and features (pure; used by ``select`` and the tests)."""
        n = energies.shape[0]
        if n_out < 0 or n_out > n:
            raise ValueError(f"sampler {self.name!r} cannot pick n_out={n_out} of {n} candidates; "
                             f"allowed: 0 <= n_out <= pool size (raise pool_factor={self.pool_factor})")
        dev = energies.device
        n_skip = min(int(math.floor(self.skip_fraction * n)), n - n_out)
        keep = energies.argsort()[n_skip:] if n_skip else torch.arange(n, device=dev)
        e, z = energies[keep], feats[keep]
        m = keep.shape[0]
        k = self.num_clusters or max(1, n_out // 2 if self.two_way else n_out)
        k = min(k, m)
        u = _rand(m, generator, dev)
        prio = u.clone()  # fill-up: random order among the unpicked
        if n_out > 0:
            trials = self.local_trials or 2 + int(math.log(k))   # sklearn's greedy k-means++ default
            labels, _ = kmeans(z, k, self.kmeans_iters, generator, n_init=self.n_init, tol=self.kmeans_tol,
                               local_trials=trials)
            lo, hi, ok = cluster_picks(e, labels, k)
            if self.two_way:
                prio.scatter_reduce_(0, hi, torch.where(ok, 2.0 + u[hi], -1.0), reduce="amax")
            prio.scatter_reduce_(0, lo, torch.where(ok, 3.0 + u[lo], -1.0), reduce="amax")
            self.last = {"picked": (prio >= 2).sum(), "energy_mean": e.mean()}
        return keep[prio.topk(n_out).indices]

    def select(self, model, candidates, n_out, generator=None):
        """Score the pool (under the caller's autocast, if any), then pick in fp32 (k-means distances need it)."""
        self._check_pool(candidates, n_out)
        e, z = self.score(model, candidates)
        with torch.autocast(candidates.device.type, enabled=False):
            return self.pick(e.float(), z.float(), n_out, generator)


class DOSSampler(EnergyClusterSampler):
    r"""``dos``: Diversified Outlier Sampling (Jiang et al., ICLR 2024) with the energy as the
    OOD-ness, as the GReg code runs it (``--oodMethod energy`` without ``--sampleTwoWay``).

    Cluster the normalized features of the pool into ``k = n_out`` clusters and take from each the
    candidate with the lowest energy (the one closest to the ID boundary; DOS's own criterion is the
    lowest absent-category probability of a K+1-way classifier, which orders candidates the same way
    for a well-separated OOD class), after dropping the ``skip_fraction`` most ID-like candidates of the
    pool (DOS/GReg code default ``--spt 16`` of a 384 pool: 1/24 - they may be ID images in the
    auxiliary set). Defaults: ``pool_factor`` 6, ``skip_fraction`` 1/24 [DOS code], k-means as
    :class:`EnergyClusterSampler` (sklearn's ``KMeans(n_init=3)`` of the GReg code) [code].
    """

    name = "dos"

    def __init__(self, pool_factor: int = 6, num_clusters: int | None = None, kmeans_iters: int = 300,
                 n_init: int = 3, kmeans_tol: float | None = 1e-4, local_trials: int | None = None,
                 feature_norm: str = "row", skip_fraction: float = 16 / 384, candidates_per_epoch: int | None = None,
                 eval_mode: bool = True):
        super().__init__(pool_factor=pool_factor, num_clusters=num_clusters, two_way=False, kmeans_iters=kmeans_iters,
                         n_init=n_init, kmeans_tol=kmeans_tol, local_trials=local_trials, feature_norm=feature_norm,
                         skip_fraction=skip_fraction, candidates_per_epoch=candidates_per_epoch, eval_mode=eval_mode)


SAMPLERS: dict[str, type[Sampler]] = {"random": RandomSampler, "energy_cluster": EnergyClusterSampler,
                                      "dos": DOSSampler}


def build_sampler(name: str, **params) -> Sampler:
    """A sampler by name; unknown names or parameters raise ValueError listing the allowed ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    import inspect

    allowed = [p for p in inspect.signature(SAMPLERS[name].__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for sampler {name!r}; "
                         f"allowed: {', '.join(allowed)}")
    return SAMPLERS[name](**params)
