r"""Computations behind the tour's illustrations of the two papers (``notebooks/00_tour.ipynb``), and its small tables.

Each function shows one idea; its docstring gives the formula and the paper it illustrates. The figures that draw
them are in :mod:`ood.illustrations`; the tour's checkpoints come from :mod:`ood.tour`.

=============================  ===================================================================  ==========
function                       what it computes                                                     paper idea
=============================  ===================================================================  ==========
:func:`feature_norm_maps`      :math:`\lVert f_{hw}(x)\rVert_2` of the last conv map and the         BFM
                               background positions the BFM loss selects
:func:`feature_norms`          the same norms, every position of every image, flattened             BFM
:func:`energies`               :math:`E(x) = -\log\sum_c e^{f_c(x)}` per image                        GReg
:func:`input_grad_norms`       :math:`\lVert \partial E / \partial \tilde x\rVert_2`, the quantity     GReg
                               GReg penalizes
:func:`energy_line`            :math:`E((1-t)\,x_a + t\,x_b)` for :math:`t \in [0, 1]`                 GReg
:func:`sampler_picks`          which pool candidates GReg+'s energy-based cluster sampler picks     GReg+
                               against uniform picks
=============================  ===================================================================  ==========

Small tables: :func:`confidence_table`, :func:`background_norm_table`, :func:`grad_norm_table`,
:func:`metrics_table`; :func:`evaluate_scores` runs ``ood.evaluate`` for them. The threshold keeping 95% of ID
samples (the FPR95 operating point) is :func:`ood.metrics.tpr_threshold`.

Energy, as in ``ood.losses``: :math:`E(x) = -\log\sum_c e^{f_c(x)}` (low = ID-like); the score of the
``energy`` scorer is :math:`-E` (higher = more ID, README "Conventions").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ood.losses import background_mask
from ood.metrics import tpr_threshold
from ood.models import OODNet
from ood.numerics import energy, eval_mode  # eval mode for a block, training flag restored
from ood.sampling import EnergyClusterSampler, RandomSampler

if TYPE_CHECKING:
    from ood.tour import TourRun

__all__ = [
    "as_float_images", "feature_norm_maps", "feature_norms", "energies", "input_grad_norms", "energy_line",
    "SamplerPicks", "sampler_picks", "confidence_table", "background_norm_table", "metrics_table", "evaluate_scores",
    "grad_norm_table",
]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def as_float_images(x) -> Tensor:
    """Images as float in [0, 1], shape ``(B, 3, H, W)``: uint8 is divided by 255, one image gets a batch axis."""
    x = torch.as_tensor(x)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(x: Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size]


# ----------------------------------------------------------------------------------------------
# BFM: norms of local features
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def feature_norm_maps(model: OODNet, x, y=None, ratio: float = 0.25) -> tuple[Tensor, Tensor]:
    r"""Per-position feature norms of the last conv map and the background mask BFM would select (BFM).

    With :math:`F = \text{model.features}(x) \in \mathbb R^{B\times C\times H\times W}` (eval mode),

    .. math:: N_{b,h,w} = \lVert F_{b,:,h,w}\rVert_2 ,

    and the mask is :func:`ood.losses.background_mask` with ``selection="ratio"``: the
    :math:`\lceil \text{ratio}\cdot HW\rceil` positions of each image whose per-position logit of the
    label ``y`` is lowest - the "fake OOD" local features whose norm the BFM loss lowers. ``y=None`` uses
    the predicted class (for unlabelled images). Returns ``norms (B, H, W)`` float and ``mask (B, H, W)``
    bool, on the model's device.
    """
    x = as_float_images(x).to(_device(model))
    with eval_mode(model):
        fmap = model.features(x).float()
        if y is None:
            y = model.head(model.pool(fmap)).argmax(1)
        y = torch.as_tensor(y, device=fmap.device).long().view(-1)
        norms = fmap.pow(2).sum(1).sqrt()
        mask = background_mask(fmap, model.fc, y, selection="ratio", ratio=ratio)
    return norms, mask


@torch.no_grad()
def feature_norms(model: OODNet, x, batch_size: int = 500) -> Tensor:
    r"""Every per-position norm :math:`\lVert F_{b,:,h,w}\rVert_2` of the last conv map, flattened to
    ``(B*H*W,)`` (BFM: compare ID images with background-only images; BFM pushes the norms of background
    positions down, so background-only images get small norms everywhere). Eval mode, on the model's device."""
    x = as_float_images(x)
    dev = _device(model)
    out = []
    with eval_mode(model):
        for xb in _batches(x, batch_size):
            out.append(model.features(xb.to(dev)).float().pow(2).sum(1).sqrt().flatten())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------
# GReg: input gradients of the energy, energy along a line
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def energies(model: OODNet, x, batch_size: int = 500) -> Tensor:
    r""":math:`E(x) = -\log\sum_c e^{f_c(x)}` per image (eval mode; low = ID-like), ``(B,)`` float."""
    x = as_float_images(x)
    dev = _device(model)
    with eval_mode(model):
        return torch.cat([energy(model(xb.to(dev))) for xb in _batches(x, batch_size)])


def input_grad_norms(model: OODNet, x, batch_size: int = 256) -> Tensor:
    r"""Per-sample norm of the input gradient of the energy, the quantity GReg penalizes (GReg, Sec. 3):

    .. math:: g(x) = \Big\lVert \frac{\partial E(x)}{\partial \tilde x} \Big\rVert_2,
              \qquad \tilde x = (x - \mu) / \sigma,\quad E = -\log\sum_c e^{f_c}

    taken w.r.t. the **normalized** input :math:`\tilde x` (as ``ood.losses.GradPenalty`` and the authors'
    code). The model is in eval mode, so BatchNorm does not couple the samples and row :math:`j` of
    :math:`\partial \sum_i E_i / \partial \tilde x` is exactly :math:`\nabla E(x_j)`. Only the input
    gradient is computed (``torch.autograd.grad`` w.r.t. :math:`\tilde x`): no parameter ``.grad`` is
    touched and nothing is updated. A small norm means the energy is flat around :math:`x`, so small input
    changes cannot move a sample across the threshold - the smoothness GReg asks for. Returns ``(B,)`` float.
    """
    x = as_float_images(x)
    dev = _device(model)
    out = []
    with eval_mode(model), torch.enable_grad():
        for xb in _batches(x, batch_size):
            xn = model.normalize(xb.to(dev)).detach().requires_grad_(True)
            e = energy(model.head(model.pool(model.body(xn))))
            (g,) = torch.autograd.grad(e.sum(), xn)
            out.append(g.flatten(1).norm(dim=1).detach())
    return torch.cat(out)


@torch.no_grad()
def energy_line(model: OODNet, x_a, x_b, n: int = 41) -> tuple[Tensor, Tensor]:
    r"""Energies along the straight line between two images in pixel space (GReg: how smooth is the energy
    landscape between an ID image and an outlier?):

    .. math:: x_t = (1 - t)\,x_a + t\,x_b,\quad t \in \{0, \tfrac1{n-1}, \dots, 1\}, \qquad E(x_t)

    ``x_a``, ``x_b``: one image each, ``(3, H, W)`` or ``(1, 3, H, W)``, in [0, 1] (uint8 is scaled), so every
    :math:`x_t` is a valid image too. The endpoints are exactly :math:`E(x_a)` and :math:`E(x_b)`.
    Returns ``t (n,)`` and ``E (n,)`` (CPU, float).
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n={n!r} must be an integer >= 2 (the two endpoints at least)")
    a, b = as_float_images(x_a), as_float_images(x_b)
    if a.shape[0] != 1 or b.shape[0] != 1 or a.shape != b.shape:
        raise ValueError(f"energy_line takes one image per end of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    t = torch.linspace(0.0, 1.0, n)
    tt = t.view(-1, 1, 1, 1).to(a.dtype)
    xs = (1 - tt) * a.cpu() + tt * b.cpu()
    xs[0], xs[-1] = a[0].cpu(), b[0].cpu()  # exact endpoints, not up to float rounding of the mix
    return t, energies(model, xs).cpu()


# ----------------------------------------------------------------------------------------------
# GReg+: which outliers the sampler picks
# ----------------------------------------------------------------------------------------------

@dataclass
class SamplerPicks:
    """Picks of the two samplers from one pool: indices into the pool, and the pool's energies."""

    cluster: Tensor     # (n_pick,) int64, EnergyClusterSampler (GReg+)
    random: Tensor      # (n_pick,) int64, RandomSampler
    energies: Tensor    # (N,) float, E of every candidate (eval mode)
    num_clusters: int


def sampler_picks(model: OODNet, aux_images, n_pick: int, seed: int = 0, **sampler_params) -> SamplerPicks:
    r"""Indices that GReg+'s energy-based cluster sampler and the uniform sampler pick from one candidate pool
    (GReg+, Sharifi et al., Sec. 3.3, Algorithm 1; ``ood.sampling.EnergyClusterSampler``).

    The cluster sampler computes :math:`E` and the normalized penultimate features :math:`z/\lVert z\rVert`
    of the pool (eval mode), clusters the features with k-means into :math:`k` clusters (default
    :math:`k = n_{pick}/2`), and takes the lowest- and the highest-energy candidate of each cluster (the
    most ID-like outliers, which the energy margin needs, and outliers already above the margin, which the
    gradient penalty smooths), filling up at random; the random sampler picks uniformly. ``aux_images``:
    the pool, ``(N, 3, H, W)`` uint8 or float in [0, 1]. Each sampler draws from its own
    ``torch.Generator`` seeded with ``seed``. ``sampler_params`` go to ``EnergyClusterSampler``
    (``num_clusters``, ``two_way``, ``skip_fraction``, ...).
    """
    x = as_float_images(aux_images).to(_device(model))
    if not isinstance(n_pick, int) or not 1 <= n_pick <= x.shape[0]:
        raise ValueError(f"n_pick={n_pick!r} must be an integer in 1..{x.shape[0]} (the pool size)")
    cl = EnergyClusterSampler(**sampler_params)
    e, z = cl.score(model, x)
    cluster = cl.pick(e, z, n_pick, torch.Generator().manual_seed(seed))
    rnd = RandomSampler().select(model, x, n_pick, torch.Generator().manual_seed(seed))
    k = cl.num_clusters or max(1, n_pick // 2 if cl.two_way else n_pick)
    return SamplerPicks(cluster=cluster.cpu(), random=rnd.cpu(), energies=e.cpu(), num_clusters=min(k, x.shape[0]))


# ----------------------------------------------------------------------------------------------
# Small tables for the tour
# ----------------------------------------------------------------------------------------------

def confidence_table(scores: Mapping[str, np.ndarray], sets: Sequence[str], threshold: float = 0.9,
                     tpr: float = 0.95) -> pd.DataFrame:
    r"""How confident a classifier is on each set: from ``scores["msp/<set>"]`` (max softmax probability
    :math:`\max_c p_c`, ``"id"`` the ID test set, as ``ood.evaluate`` names them) the mean, the percentage of
    images with :math:`\max_c p_c \ge` ``threshold``, and the percentage accepted as ID at the threshold that keeps
    ``tpr`` of the ID test images (:func:`ood.metrics.tpr_threshold`; for an OOD set this is its FPR95 under MSP). One
    row per set, ID first."""
    t = tpr_threshold(scores["msp/id"], tpr)
    rows = []
    for s in ["id", *sets]:
        v = np.asarray(scores[f"msp/{s}"])
        rows.append({"set": "ID test" if s == "id" else s, "mean max-softmax": float(v.mean()),
                     f"% with max-softmax >= {threshold:g}": 100.0 * float((v >= threshold).mean()),
                     f"% accepted at {100 * tpr:g}% TPR": 100.0 * float((v >= t).mean())})
    return pd.DataFrame(rows).set_index("set")


def background_norm_table(models: Mapping[str, OODNet], x, y, ratio: float = 0.25) -> pd.DataFrame:
    r"""BFM in numbers: per model, the mean local feature norm on the background positions BFM selects, on the
    other ("object") positions of the same ID images, and their ratio (:func:`feature_norm_maps`). BFM lowers
    the first, so the ratio drops."""
    rows = []
    for m, model in models.items():
        norms, mask = feature_norm_maps(model, x, y, ratio)
        bg, fg = norms[mask].mean().item(), norms[~mask].mean().item()
        rows.append({"model": m, "background norm": bg, "object norm": fg, "background / object": bg / fg})
    return pd.DataFrame(rows).set_index("model")


def metrics_table(results: Mapping[str, object], metric: str = "fpr95", scorer: str = "energy",
                  runs: Mapping[str, TourRun] | None = None) -> pd.DataFrame:
    """One row per model: ``metric`` of ``scorer`` on every OOD set (and their average), from
    ``ood.evaluate.EvalResult`` objects by model name, plus the ID test accuracy (%) and, with ``runs``, where
    the checkpoint came from."""
    rows = []
    for m, res in results.items():
        d = res.metrics[res.metrics["scorer"] == scorer].set_index("ood_set")[metric]
        row = {"model": m, **d.to_dict(), "ID accuracy": res.id_accuracy}
        if runs is not None and m in runs:
            row["checkpoint"] = runs[m].source
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def evaluate_scores(model: OODNet, bench, scorers: Mapping[str, dict], name: str, device="cpu"):
    """``ood.evaluate.evaluate`` of ``model`` on a benchmark's ID test and OOD sets with ``scorers`` (name ->
    parameters), named ``name``. When no scorer fits statistics on ID-train (MSP, Energy, MaxLogit, ...), only
    the first 500 ID-train images are passed, since ``evaluate`` extracts their features anyway and none is used;
    the metrics are the same."""
    from ood.evaluate import evaluate
    from ood.scorers import build_scorer

    needs_fit = any(build_scorer(s, **(p or {})).needs_fit for s, p in scorers.items())
    id_train = bench.id_train if needs_fit else bench.id_train.subset(min(500, len(bench.id_train)))
    return evaluate(model, id_train=id_train, id_test=bench.id_test, ood_sets=bench.ood, scorers=dict(scorers),
                    benchmark=bench.name, method=name, device=device, progress=False)


def grad_norm_table(models: Mapping[str, OODNet], sets: Mapping[str, Tensor]) -> pd.DataFrame:
    """:func:`input_grad_norms` of every set under every model, one row per sample: ``model``, ``set``, ``norm``."""
    rows = []
    for m, model in models.items():
        for s, x in sets.items():
            rows.append(pd.DataFrame({"model": m, "set": s, "norm": input_grad_norms(model, x).cpu().numpy()}))
    return pd.concat(rows, ignore_index=True)

