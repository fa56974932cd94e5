r"""Computations and figures that explain the two papers, for the tour notebook (``notebooks/00_tour.ipynb``).

Each function shows one idea; its docstring gives the formula and the paper it illustrates.

=============================  ===================================================================  ==========
function                       what it computes                                                     paper idea
=============================  ===================================================================  ==========
:func:`feature_norm_maps`      :math:`\lVert f_{hw}(x)\rVert_2` of the last conv map and the         BFM
                               background positions the BFM loss selects
:func:`feature_norms`          the same norms, every position of every image, flattened             BFM
:func:`input_grad_norms`       :math:`\lVert \partial E / \partial \tilde x\rVert_2`, the quantity     GReg
                               GReg penalizes
:func:`energy_line`            :math:`E((1-t)\,x_a + t\,x_b)` for :math:`t \in [0, 1]`                 GReg
:func:`sampler_picks`          which pool candidates GReg+'s energy-based cluster sampler picks     GReg+
                               against uniform picks
:func:`tpr_threshold`          the threshold keeping 95% of ID samples (the FPR95 operating point)  metrics
=============================  ===================================================================  ==========

Figures: :func:`feature_norm_figure`, :func:`feature_norm_hist_figure` (BFM), :func:`grad_norm_figure`,
:func:`energy_line_figure` (GReg), :func:`sampler_picks_figure` (GReg+), :func:`roc_threshold_figure` (FPR95 and
AUROC). Small tables: :func:`confidence_table`, :func:`background_norm_table`, :func:`grad_norm_table`,
:func:`metrics_table`; :func:`evaluate_scores` runs ``ood.evaluate`` for them.

Energy, as in ``ood.losses``: :math:`E(x) = -\log\sum_c e^{f_c(x)}` (low = ID-like); the score of the
``energy`` scorer is :math:`-E` (higher = more ID, DESIGN.md "Conventions").

The figure functions return a matplotlib ``Figure`` and, given ``path``, save it with
:func:`ood.plots.save` (PNG; PDF too with ``pdf=True``). :func:`tour_models` gives the tour its checkpoints:
the pipeline's when they exist and were trained as asked, otherwise small runs of its own.
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.collections import LineCollection
from matplotlib.patches import Patch
from torch import Tensor

from ood import config as C
from ood.losses import background_mask
from ood.numerics import energy
from ood.metrics import auroc, fpr_at_tpr, roc_curve, tpr_threshold  # tpr_threshold: re-exported for the tour
from ood.models import OODNet
from ood.plots import save
from ood.sampling import EnergyClusterSampler, RandomSampler
from ood.numerics import eval_mode  # eval mode for a block, training flag restored

__all__ = [
    "feature_norm_maps", "feature_norms", "input_grad_norms", "energies", "energy_line", "SamplerPicks",
    "sampler_picks", "tpr_threshold", "confidence_table", "background_norm_table", "metrics_table", "grad_norm_table", "evaluate_scores",
    "feature_norm_figure", "feature_norm_hist_figure", "grad_norm_figure",
    "energy_line_figure", "sampler_picks_figure", "roc_threshold_figure", "TOUR_SCHEMA", "TourRun", "tour_models",
]

#: One colour per role, the same in every figure of this module.
COLORS = {"id": "tab:blue", "ood": "tab:red", "background": "tab:orange", "aux": "tab:green"}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def _as_float_images(x) -> Tensor:
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


def _hwc(x: Tensor) -> np.ndarray:
    """One image (3, H, W) in [0, 1] as an (H, W, 3) numpy array for imshow."""
    return _as_float_images(x)[0].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _image_axes(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


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
    x = _as_float_images(x).to(_device(model))
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
    x = _as_float_images(x)
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
    x = _as_float_images(x)
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
    x = _as_float_images(x)
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
    a, b = _as_float_images(x_a), _as_float_images(x_b)
    if a.shape[0] != 1 or b.shape[0] != 1 or a.shape != b.shape:
        raise ValueError(f"energy_line takes one image per end of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
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
    x = _as_float_images(aux_images).to(_device(model))
    if not isinstance(n_pick, int) or not 1 <= n_pick <= x.shape[0]:
        raise ValueError(f"n_pick={n_pick!r} must be an integer in 1..{x.shape[0]} (the pool size)")
    cl = EnergyClusterSampler(**sampler_params)
    e, z = cl.score(model, x)
    cluster = cl.pick(e, z, n_pick, torch.Generator().manual_seed(seed))
    rnd = RandomSampler().select(model, x, n_pick, torch.Generator().manual_seed(seed))
    k = cl.num_clusters or max(1, n_pick // 2 if cl.two_way else n_pick)
    return SamplerPicks(cluster=cluster.cpu(), random=rnd.cpu(), energies=e.cpu(), num_clusters=min(k, x.shape[0]))


# ----------------------------------------------------------------------------------------------
# Metrics: the FPR95 operating point
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Small tables for the tour
# ----------------------------------------------------------------------------------------------

def confidence_table(scores: Mapping[str, np.ndarray], sets: Sequence[str], threshold: float = 0.9,
                     tpr: float = 0.95) -> pd.DataFrame:
    r"""How confident a classifier is on each set: from ``scores["msp/<set>"]`` (max softmax probability
    :math:`\max_c p_c`, ``"id"`` the ID test set, as ``ood.evaluate`` names them) the mean, the percentage of
    images with :math:`\max_c p_c \ge` ``threshold``, and the percentage accepted as ID at the threshold that keeps
    ``tpr`` of the ID test images (:func:`tpr_threshold`; for an OOD set this is its FPR95 under MSP). One row per
    set, ID first."""
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
                  runs: Mapping[str, "TourRun"] | None = None) -> pd.DataFrame:
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


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------

def _mask_outline(mask: np.ndarray, cell: float) -> list:
    """Segments of the outline of the union of the True cells of ``mask`` (H, W), in pixel coordinates of an
    image whose cells are ``cell`` pixels wide (imshow coordinates: cell (i, j) spans x in [j*cell, (j+1)*cell])."""
    h, w = mask.shape
    segs = []
    o = -0.5  # imshow puts pixel centres on integers
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            x0, x1, y0, y1 = o + j * cell, o + (j + 1) * cell, o + i * cell, o + (i + 1) * cell
            if i == 0 or not mask[i - 1, j]:
                segs.append([(x0, y0), (x1, y0)])
            if i == h - 1 or not mask[i + 1, j]:
                segs.append([(x0, y1), (x1, y1)])
            if j == 0 or not mask[i, j - 1]:
                segs.append([(x0, y0), (x0, y1)])
            if j == w - 1 or not mask[i, j + 1]:
                segs.append([(x1, y0), (x1, y1)])
    return segs


def feature_norm_figure(models: Mapping[str, OODNet], x, y, ratio: float = 0.25, class_names: Sequence[str] | None = None,
                        path=None, pdf: bool = False):
    r"""BFM, where the local features are large: one row per image; the image, then for each model the map
    :math:`\lVert f_{hw}\rVert_2` of its last conv map (:func:`feature_norm_maps`) drawn over the image's
    extent, with the background positions BFM selects (ratio ``ratio``, label ``y``) outlined in cyan.
    One colour scale per row (shared by the models), so a lower background norm after BFM shows as a darker
    map. Each panel's label gives the mean norm on the selected background positions ("bg") and on the rest
    ("object")."""
    x = _as_float_images(x)
    y = torch.as_tensor(y).long().view(-1)
    names = list(models)
    maps = {m: tuple(t.cpu().numpy() for t in feature_norm_maps(models[m], x, y, ratio)) for m in names}
    n = x.shape[0]
    fig_h = 1.55 * n + 0.9
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(1.55 * (1 + len(names)) + 0.6, fig_h), squeeze=False)
    fig.subplots_adjust(top=1 - 0.3 / fig_h, bottom=0.6 / fig_h, hspace=0.3)
    size = x.shape[-1]
    for r in range(n):
        vmax = max(float(maps[m][0][r].max()) for m in names) or 1.0
        ax = axes[r, 0]
        ax.imshow(_hwc(x[r]), interpolation="nearest")
        _image_axes(ax)
        label = class_names[int(y[r])] if class_names is not None else f"class {int(y[r])}"
        ax.set_ylabel(label, fontsize=8)
        if r == 0:
            ax.set_title("image")
        for c, m in enumerate(names, start=1):
            norms, mask = maps[m][0][r], maps[m][1][r]
            ax = axes[r, c]
            cell = size / norms.shape[0]
            im = ax.imshow(norms, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest",
                           extent=(-0.5, size - 0.5, size - 0.5, -0.5))
            ax.add_collection(LineCollection(_mask_outline(mask, cell), colors="cyan", linewidths=1.2))
            _image_axes(ax)
            bg = norms[mask].mean() if mask.any() else float("nan")
            fg = norms[~mask].mean() if (~mask).any() else float("nan")
            ax.set_xlabel(f"bg {bg:.2f} | object {fg:.2f}", fontsize=7, labelpad=2)
            if r == 0:
                ax.set_title(f"{m}: feature norm")
        fig.colorbar(im, ax=axes[r, 1:].tolist(), fraction=0.04, pad=0.02, label="‖f_hw‖₂" if r == n // 2 else None)
    fig.legend(handles=[Patch(facecolor="none", edgecolor="cyan", label=f"background positions BFM selects (ratio {ratio:g})")],
               loc="lower center", frameon=False, bbox_to_anchor=(0.45, 0.0))
    return save(fig, path, pdf)


def feature_norm_hist_figure(models: Mapping[str, OODNet], x_id, x_bg, y_id=None, ratio: float = 0.25, path=None,
                             pdf: bool = False):
    r"""BFM, distributions of the local feature norms :math:`\lVert f_{hw}\rVert_2` (:func:`feature_norms`):
    one panel per model, every position of the ID images against every position of background-only images.
    With ``y_id`` the ID positions are split into the background positions BFM selects (ratio ``ratio``) and
    the others ("object"). Before BFM the background-only images have norms like the ID ones; after BFM they
    move towards 0, so the pooled feature - and the logits and energy - of a background-only image shrink."""
    names = list(models)
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 2.6), squeeze=False)
    for ax, m in zip(axes[0], names):
        model = models[m]
        groups = {}
        if y_id is not None:
            norms, mask = feature_norm_maps(model, x_id, y_id, ratio)
            groups["ID, object positions"] = (norms[~mask].cpu().numpy(), COLORS["id"])
            groups["ID, selected background positions"] = (norms[mask].cpu().numpy(), COLORS["background"])
        else:
            groups["ID images"] = (feature_norms(model, x_id).cpu().numpy(), COLORS["id"])
        groups["background-only images (OOD)"] = (feature_norms(model, x_bg).cpu().numpy(), COLORS["ood"])
        hi = max(np.percentile(v, 99.5) for v, _ in groups.values()) or 1.0
        bins = np.linspace(0, hi, 40)
        for label, (v, col) in groups.items():
            ax.hist(v, bins=bins, density=True, alpha=0.5, color=col, label=label, histtype="stepfilled")
        ax.set_title(m)
        ax.set_xlabel("local feature norm ‖f_hw‖₂")
    axes[0, 0].set_ylabel("density")
    axes[0, -1].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save(fig, path, pdf)


def grad_norm_table(models: Mapping[str, OODNet], sets: Mapping[str, Tensor]) -> pd.DataFrame:
    """:func:`input_grad_norms` of every set under every model, one row per sample: ``model``, ``set``, ``norm``."""
    rows = []
    for m, model in models.items():
        for s, x in sets.items():
            rows.append(pd.DataFrame({"model": m, "set": s, "norm": input_grad_norms(model, x).cpu().numpy()}))
    return pd.concat(rows, ignore_index=True)


def grad_norm_figure(models: Mapping[str, OODNet], sets: Mapping[str, Tensor], path=None, pdf: bool = False,
                     table: pd.DataFrame | None = None):
    r"""GReg, distributions of :math:`\lVert\partial E/\partial\tilde x\rVert_2` (:func:`input_grad_norms`) per
    set (x axis) and model (colour), log scale. GReg penalizes this norm for ID samples below the ID margin
    and outliers above the outlier margin, so after GReg the boxes move down: the energy is flatter around
    the training data and a small perturbation cannot flip the decision. ``table``: the output of
    :func:`grad_norm_table` when already computed (``models`` and ``sets`` then only give the order)."""
    import seaborn as sns  # on use: seaborn imports scipy.stats (about 1 s), which no other figure needs

    df = grad_norm_table(models, sets) if table is None else table
    fig, ax = plt.subplots(figsize=(0.55 * len(sets) * max(2, len(models)) + 2.2, 3.0))
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib's deprecated `vert` to boxplot
        warnings.simplefilter("ignore", DeprecationWarning)
        sns.boxplot(data=df, x="set", y="norm", hue="model", order=list(sets), hue_order=list(models), log_scale=True,
                    ax=ax, fliersize=1.5, linewidth=0.8)
    ax.set_xlabel("samples")
    ax.set_ylabel("‖∂E/∂x̃‖₂ (input gradient of the energy)")
    ax.set_title("Input-gradient norm of the energy E(x) = -logsumexp f(x)")
    ax.legend(title="model", frameon=False, fontsize=7, title_fontsize=8)
    fig.tight_layout()
    return save(fig, path, pdf)


def energy_line_figure(models: Mapping[str, OODNet], x_id, x_out, n: int = 41, margins: tuple[float, float] | None = None,
                       labels: tuple[str, str] = ("ID image", "outlier"), path=None, pdf: bool = False):
    r"""GReg, the energy along the straight line from an ID image (:math:`t=0`) to an outlier (:math:`t=1`)
    (:func:`energy_line`), one curve per model, the two images beside the plot. ``margins``
    :math:`(m_{in}, m_{out})` of the Energy-OE / GReg loss are drawn as dotted lines. A smooth, monotone
    curve is what GReg's penalty favours; a curve that stays low far into the outlier side means the
    outlier-ish mixtures are still accepted as ID."""
    fig = plt.figure(figsize=(8.0, 2.6))
    gs = fig.add_gridspec(1, 3, width_ratios=[1, 4, 1], wspace=0.45)
    ax_a, ax, ax_b = fig.add_subplot(gs[0]), fig.add_subplot(gs[1]), fig.add_subplot(gs[2])
    for m, model in models.items():
        t, e = energy_line(model, x_id, x_out, n)
        ax.plot(t.numpy(), e.numpy(), marker=".", ms=3, lw=1.3, label=m)
    if margins is not None:
        for v, name in zip(margins, ("m_in", "m_out")):
            ax.axhline(v, color="0.5", lw=0.7, ls=":")
            ax.text(1.0, v, f" {name}", color="0.4", fontsize=7, va="center", transform=ax.get_yaxis_transform())
    ax.set_xlabel(f"t  (x_t = (1-t)·{labels[0]} + t·{labels[1]})")
    ax.set_ylabel("energy E(x_t)  (low = ID-like)")
    ax.set_title(f"Energy along the line from an {labels[0]} to an {labels[1]}")
    ax.legend(frameon=False, fontsize=7)
    for a, img, title in ((ax_a, x_id, f"t = 0: {labels[0]}"), (ax_b, x_out, f"t = 1: {labels[1]}")):
        a.imshow(_hwc(img), interpolation="nearest")
        _image_axes(a)
        a.set_title(title, fontsize=8)
    return save(fig, path, pdf)


def sampler_picks_figure(aux_images, picks: SamplerPicks, n_show: int = 16, path=None, pdf: bool = False):
    r"""GReg+, what the energy-based cluster sampler picks (:func:`sampler_picks`): top, the energies of the
    whole candidate pool with the picks of each sampler as ticks; below, the first ``n_show`` picks of each
    sampler (sorted by energy, energy above each image). The cluster sampler covers both tails of the energy
    distribution (lowest and highest energy of each cluster) and many clusters; uniform picks crowd around
    the pool's typical energy."""
    x = _as_float_images(aux_images)
    e = picks.energies.numpy()
    rows = {f"GReg+ sampler (k={picks.num_clusters} clusters)": picks.cluster, "random sampler": picks.random}
    n_show = max(1, min(n_show, len(picks.cluster)))
    ncols = min(n_show, 16)
    nrows_each = -(-n_show // ncols)
    fig = plt.figure(figsize=(0.62 * ncols + 0.8, 2.4 + 0.72 * nrows_each * len(rows)))
    gs = fig.add_gridspec(2 + nrows_each * len(rows), ncols, height_ratios=[2.6, 0.3] + [1] * nrows_each * len(rows),
                          hspace=0.55, wspace=0.08)
    ax = fig.add_subplot(gs[0, :])
    bins = np.linspace(e.min(), e.max() if e.max() > e.min() else e.min() + 1, 40)
    ax.hist(e, bins=bins, color="0.8", label=f"candidate pool ({len(e)})")
    ymax = ax.get_ylim()[1]
    for (name, idx), col, (lo, hi) in zip(rows.items(), ("tab:purple", "tab:green"), ((1.02, 1.12), (1.14, 1.24))):
        ax.vlines(e[idx.numpy()], lo * ymax, hi * ymax, color=col, lw=1.0, label=f"{name} picks")
    ax.set_ylim(0, 1.27 * ymax)
    ax.set_xlabel("energy E of the auxiliary candidate (low = ID-like)")
    ax.set_ylabel("candidates")
    ax.set_title("Which auxiliary outliers enter the training step")
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for r, (name, idx) in enumerate(rows.items()):
        idx = idx[:n_show]
        idx = idx[torch.as_tensor(e[idx.numpy()]).argsort()]
        for k in range(nrows_each * ncols):
            a = fig.add_subplot(gs[2 + r * nrows_each + k // ncols, k % ncols])
            _image_axes(a)
            if k < len(idx):
                a.imshow(_hwc(x[int(idx[k])]), interpolation="nearest")
                a.set_title(f"{e[int(idx[k])]:.1f}", fontsize=6, pad=1)
            if k == 0:
                a.set_ylabel(name.split(" (")[0].replace(" sampler", "\nsampler"), rotation=0, ha="right", va="center",
                             fontsize=7)
    return save(fig, path, pdf)


def roc_threshold_figure(id_scores, ood_scores, score_name: str = "score", ood_name: str = "OOD", tpr: float = 0.95,
                         path=None, pdf: bool = False):
    r"""What FPR95 and AUROC mean, on one score and one OOD set (ID positive, higher score = more ID).

    Left: the score histograms of ID and OOD samples and the threshold :math:`t` keeping ``tpr`` of the ID
    samples (:func:`tpr_threshold`); the OOD mass right of :math:`t` is the FPR at 95% TPR. Right: the ROC
    curve (TPR = ID accepted, FPR = OOD accepted, as the threshold sweeps), the area under it shaded
    (AUROC) and the operating point at 95% TPR marked. The numbers come from :mod:`ood.metrics`."""
    sid = np.asarray(torch.as_tensor(id_scores).detach().cpu().double()).ravel()
    sood = np.asarray(torch.as_tensor(ood_scores).detach().cpu().double()).ravel()
    thr = tpr_threshold(sid, tpr)
    fpr95, auc = fpr_at_tpr(sid, sood, tpr), auroc(sid, sood)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.4, 2.9), gridspec_kw={"width_ratios": [1.4, 1]})
    lo, hi = np.percentile(np.r_[sid, sood], [0.5, 99.5])
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 50)
    a1.hist(sid, bins=bins, density=True, alpha=0.55, color=COLORS["id"], label="ID test", histtype="stepfilled")
    a1.hist(sood, bins=bins, density=True, alpha=0.55, color=COLORS["ood"], label=ood_name, histtype="stepfilled")
    a1.axvline(thr, color="k", lw=1.0, ls="--", label=f"threshold t (keeps {100 * tpr:.0f}% of ID)")
    a1.axvspan(thr, bins[-1], color="0.5", alpha=0.08, label="accepted as ID (score ≥ t)")
    a1.set_xlabel(f"{score_name} score (higher = more ID)")
    a1.set_ylabel("density")
    a1.set_title(f"Scores: ID test vs {ood_name}; OOD accepted (≥ t): FPR{100 * tpr:.0f} = {fpr95:.1f}%")
    a1.legend(frameon=False, fontsize=7, loc="upper right")
    f, t, _ = roc_curve(sid, sood)
    a2.plot(f, t, color="k", lw=1.3)
    a2.fill_between(f, 0, t, color=COLORS["id"], alpha=0.12, step="post")
    a2.plot([0, 1], [0, 1], color="0.7", lw=0.6)
    a2.axhline(tpr, color="k", lw=0.6, ls=":")
    a2.plot(fpr95 / 100, tpr, "o", color=COLORS["ood"], ms=5, label=f"TPR {100 * tpr:.0f}%: FPR {fpr95:.1f}%")
    a2.text(0.55, 0.3, f"AUROC = {auc:.1f}%\n(shaded area)", fontsize=7, transform=a2.transAxes)
    a2.set_xlabel("FPR (fraction of OOD accepted)")
    a2.set_ylabel("TPR (fraction of ID accepted)")
    a2.set_title(f"ROC curve, {score_name}")
    a2.legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    return save(fig, path, pdf)


# ----------------------------------------------------------------------------------------------
# The tour's checkpoints
# ----------------------------------------------------------------------------------------------

#: Parameters of ``notebooks/00_tour.ipynb`` (name -> (check, allowed values)), the ``"tour"`` entry of
#: :data:`ood.config.NOTEBOOK_SCHEMAS` that :func:`ood.config.check_notebook_params` checks.
TOUR_SCHEMA: dict[str, tuple] = C.NOTEBOOK_SCHEMAS["tour"]


@dataclass
class TourRun:
    """One model of the tour and where it came from."""

    method: str
    model: OODNet
    source: str             # "pipeline" or "tour"
    run_dir: Path
    terms: dict             # loss term -> every parameter it was trained with (defaults filled in)
    test_accuracy: float | None
    history: pd.DataFrame | None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _full_terms(terms: Mapping[str, dict] | None) -> dict:
    """Loss terms with every parameter, defaults filled in (``ood.losses.build_term``)."""
    from ood.losses import build_term

    return {n: dict(build_term(n, **(p or {})).params) for n, p in (terms or {}).items()}


def _same_losses(cfg_dict: dict, cfg) -> bool:
    """Whether a stored run configuration has the loss terms and sampler of ``cfg``, after filling in each term's
    defaults (so ``{"ratio": 0.25}`` equals ``{}`` when 0.25 is the default); a term that cannot be built
    (a stored configuration from another version) counts as different."""
    def full(terms):
        try:
            return json.loads(json.dumps(_full_terms(terms), sort_keys=True))
        except ValueError:
            return None

    def norm(v):
        return json.loads(json.dumps(v, sort_keys=True))

    a = full(cfg_dict.get("terms"))
    return a is not None and a == full(cfg.terms) and norm(cfg_dict.get("sampler")) == norm(cfg.sampler)


def tour_models(params: dict, methods: Sequence[str], profile: str = "synthetic", *, run_root: str | Path = "runs/tour",
                use_pipeline_runs: bool = True, scratch_epochs: int | None = 4, finetune_steps: int | None = None,
                terms: Mapping[str, Mapping[str, dict]] | None = None,
                init: Mapping[str, str] | None = None, pipeline_only: Sequence[str] = (), device="cpu", bench=None,
                seed: int | None = None, pipeline_root: str | Path | None = None) -> dict[str, TourRun]:
    """The tour's models by method: the pipeline's checkpoint ``runs/<profile>/<method>/model.pt`` when it exists
    and was trained with the loss terms and sampler asked for, else a small run of the tour's own.

    ``terms``: per method, per loss term, parameters that override params.yaml (e.g.
    ``{"bfm": {"background": {"ratio": 0.5}}}``; a value None keeps params.yaml's); a pipeline checkpoint
    trained otherwise is not used.
    A method that fine-tunes (``init`` of params.yaml's pipeline block, or ``init[method]``) starts from the
    model this function returned for its init method - the pipeline's or the tour's - so ``methods`` must list
    the init method first. Tour runs (``ood.train.train``) go to ``run_root/<method>-<key>``, the key a hash of
    the configuration and the init checkpoint, so a rerun with the same settings reloads them and a changed
    setting trains anew. Scratch methods train ``scratch_epochs`` epochs, fine-tunes ``finetune_steps`` steps per
    epoch (None: the method's recipe in params.yaml; every other setting is the recipe's). Methods in
    ``pipeline_only`` (too slow for the tour, e.g. GReg+, whose sampler scores a pool six times the outlier
    batch at every step) are returned only when the pipeline has them, and left out otherwise. ``bench``: an
    already loaded ``ood.pipeline.Benchmark`` (default: the profile's); ``pipeline_root``: the repository whose ``runs/`` hold the pipeline's checkpoints (default: this one).
    """
    from ood.pipeline import load_benchmark, model_spec, paths
    from ood.train import load_model, train

    root = C.repo_root()
    run_root = Path(run_root)
    run_root = run_root if run_root.is_absolute() else root / run_root
    device = C.resolve_device(device) if isinstance(device, str) else torch.device(device)
    out: dict[str, TourRun] = {}
    for method in methods:
        spec = model_spec(params, profile, method)
        base = C.method_config(params, method, profile)
        init_method = (init or {}).get(method, base.init)
        new_terms = copy.deepcopy(base.terms)
        for term, over in ((terms or {}).get(method) or {}).items():
            if term not in new_terms:
                raise ValueError(f"method {method!r} has no loss term {term!r}; its terms: {', '.join(new_terms)}")
            new_terms[term] = {**(new_terms[term] or {}), **{k: v for k, v in over.items() if v is not None}}
        overrides = {"terms": new_terms, "init": init_method, "seed": seed}  # None values: the recipe's
        if init_method:
            overrides["steps_per_epoch"] = finetune_steps
        else:
            overrides["epochs"] = scratch_epochs
        cfg = C.method_config(params, method, profile, **overrides)

        pipe_dir = paths(profile, method, Path(pipeline_root) if pipeline_root else root, seed=cfg.seed)["run"]
        pipe_model = pipe_dir / "model.pt"
        if use_pipeline_runs and pipe_model.is_file():
            blob = torch.load(pipe_model, map_location="cpu", weights_only=True)
            meta = blob.get("meta", {})
            if _same_losses(meta.get("config", {}), cfg) and (not init_method or out.get(init_method, None) is None
                                                              or out[init_method].source == "pipeline"):
                out[method] = TourRun(method, load_model(pipe_dir, device), "pipeline", pipe_dir, _full_terms(cfg.terms),
                                      meta.get("test_accuracy"), None)
                continue
        if method in pipeline_only:
            continue

        if bench is None:
            bench = load_benchmark(params, profile)
        if init_method:
            if init_method not in out:
                raise ValueError(f"method {method!r} fine-tunes from {init_method!r}: list {init_method!r} before it")
            init_dir = out[init_method].run_dir
            init_digest = _file_digest(init_dir / "model.pt")
        else:
            init_dir, init_digest = None, ""
        key = hashlib.sha256(json.dumps({"cfg": asdict(cfg), "model": spec, "init": init_digest},
                                        sort_keys=True, default=str).encode()).hexdigest()[:10]
        run_dir = run_root / f"{method}-{key}"
        history = train(cfg, spec, bench.id_train, run_dir, aux=bench.aux if cfg.out_batch_size > 0 else None,
                        id_test=bench.id_test, init_dir=init_dir, device=device, progress=False)
        acc = float(history["test_accuracy"].iloc[-1]) if len(history) and "test_accuracy" in history else None
        out[method] = TourRun(method, load_model(run_dir, device), "tour", run_dir, _full_terms(cfg.terms), acc, history)
    return out
