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

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ood.models import OODNet

__all__ = ["Sampler", "RandomSampler", "EnergyClusterSampler", "DOSSampler", "SAMPLERS", "build_sampler", "kmeans",
           "cluster_picks"]


def _rand(n: int, generator: torch.Generator | None, device) -> Tensor:
    """``n`` uniforms in [0, 1) drawn on the CPU from ``generator`` (CPU generators work for any device)."""
    return torch.rand(n, generator=generator).to(device)


def _sq_dists(x: Tensor, c: Tensor) -> Tensor:
    """Squared Euclidean distances ``(N, k)`` by ``|x|^2 - 2 x c^T + |c|^2`` (one matmul), clamped at 0."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)[None]).clamp_min_(0)


def kmeans(x: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), pure torch on ``x``'s device.

    ``x``: ``(N, D)``; returns ``labels (N,)`` int64 and ``centers (k, D)``. A fixed number of ``iters``
    Lloyd steps (no convergence test, hence no host sync); a cluster that becomes empty keeps its
    center. Seeding draws each next center with probability proportional to the squared distance to
    the nearest chosen one (inverse CDF on uniforms from ``generator``). The GReg code uses sklearn's
    ``KMeans(n_init=3)``; one seeding + 10 steps is our choice (cheap, on the GPU).
    """
    if x.dim() != 2:
        raise ValueError(f"kmeans expects x of shape (N, D), got {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"invalid number of clusters k={k} for {n} points; allowed: 1 <= k <= N")
    if iters < 0:
        raise ValueError(f"invalid iters={iters}; allowed: >= 0")
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    u = _rand(k, generator, x.device).to(xf.dtype)
    first = (u[0] * n).long().clamp_(max=n - 1)
    centers = xf.new_empty(k, xf.shape[1])
    centers[0] = xf.index_select(0, first.reshape(1))[0]
    d2 = _sq_dists(xf, centers[:1])[:, 0]
    for j in range(1, k):
        cdf = d2.cumsum(0)
        total = cdf[-1]
        # all points coincide with a center: fall back to uniform
        target = torch.where(total > 0, u[j] * total, u[j] * n)
        cdf = torch.where(total > 0, cdf, torch.arange(1, n + 1, device=x.device, dtype=xf.dtype))
        idx = torch.searchsorted(cdf, target.reshape(1), right=True).clamp_(max=n - 1)
        centers[j] = xf.index_select(0, idx)[0]
        d2 = torch.minimum(d2, _sq_dists(xf, centers[j:j + 1])[:, 0])
    labels = _sq_dists(xf, centers).argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(centers).index_add_(0, labels, xf)
        counts = torch.bincount(labels, minlength=k).to(xf.dtype)
        centers = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centers)
        labels = _sq_dists(xf, centers).argmin(1)
    return labels, centers


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
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"invalid value {v!r} for parameter {key!r} of sampler {sampler!r}; "
                         f"allowed: an integer >= {low}" + (" or None" if allow_none else ""))


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
    runs use ``--spt 0``: nothing dropped). Defaults: ``pool_factor`` 6 [GReg+ protocol],
    ``two_way`` True [GReg+ scripts], ``kmeans_iters`` 10 [our choice].
    """

    name = "energy_cluster"

    def __init__(self, pool_factor: int = 6, num_clusters: int | None = None, two_way: bool = True,
                 kmeans_iters: int = 10, skip_fraction: float = 0.0, eval_mode: bool = True):
        _check_int(self.name, "pool_factor", pool_factor, 1)
        _check_int(self.name, "num_clusters", num_clusters, 1, allow_none=True)
        _check_int(self.name, "kmeans_iters", kmeans_iters, 0)
        for key, v in (("two_way", two_way), ("eval_mode", eval_mode)):
            if not isinstance(v, bool):
                raise ValueError(f"invalid value {v!r} for parameter {key!r} of sampler {self.name!r}; "
                                 "allowed: true, false")
        if isinstance(skip_fraction, bool) or not isinstance(skip_fraction, (int, float)) or not 0 <= skip_fraction < 1:
            raise ValueError(f"invalid value {skip_fraction!r} for parameter 'skip_fraction' of sampler {self.name!r}; "
                             "allowed: 0 <= skip_fraction < 1")
        self.pool_factor, self.num_clusters, self.two_way = pool_factor, num_clusters, two_way
        self.kmeans_iters, self.skip_fraction, self.eval_mode = kmeans_iters, float(skip_fraction), eval_mode
        self.last: dict[str, Tensor] = {}

    @torch.no_grad()
    def score(self, model: OODNet, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Energies ``(N,)`` and L2-normalized penultimate features ``(N, C)`` of the pool (eval mode if
        ``eval_mode``; the model's mode is restored)."""
        was = model.training
        if self.eval_mode:
            model.eval()
        try:
            pen = model.pool(model.features(candidates))
            logits = model.head(pen)
        finally:
            model.train(was)
        e = -torch.logsumexp(logits.float(), 1)
        return e, F.normalize(pen.float(), dim=1)

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
            labels, _ = kmeans(z, k, self.kmeans_iters, generator)
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
    auxiliary set). Defaults: ``pool_factor`` 6, ``skip_fraction`` 1/24 [DOS code], ``kmeans_iters`` 10
    [our choice].
    """

    name = "dos"

    def __init__(self, pool_factor: int = 6, num_clusters: int | None = None, kmeans_iters: int = 10,
                 skip_fraction: float = 16 / 384, eval_mode: bool = True):
        super().__init__(pool_factor=pool_factor, num_clusters=num_clusters, two_way=False, kmeans_iters=kmeans_iters,
                         skip_fraction=skip_fraction, eval_mode=eval_mode)


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
