r"""The tour's figures (``notebooks/00_tour.ipynb``; ``notebooks/05_figures.ipynb`` draws the first three for the
paper's figures too), each drawing one idea of the two papers from :mod:`ood.analysis`:

===============================  ===========================================================  ==========
figure                           what it shows                                                paper idea
===============================  ===========================================================  ==========
:func:`feature_norm_figure`      the local feature-norm map of each image, with the           BFM
                                 background positions BFM selects outlined
:func:`feature_norm_hist_figure` the distributions of the local feature norms, ID against     BFM
                                 background-only images
:func:`grad_norm_figure`         the input-gradient norms of the energy per set and model     GReg
:func:`energy_line_figure`       the energy along the line from an ID image to an outlier     GReg
:func:`sampler_picks_figure`     which pool candidates the energy-based cluster sampler and   GReg+
                                 the uniform sampler pick
:func:`roc_threshold_figure`     the FPR95 threshold on the score histograms and the ROC      metrics
                                 curve with its area (AUROC)
===============================  ===========================================================  ==========

Each returns a matplotlib ``Figure`` and, given ``path``, saves it with :func:`ood.plots.save` (PNG; PDF too with
``pdf=True``). :data:`COLORS` gives one colour per role; the histogram and ROC axes are drawn by
:func:`ood.plots.histogram_panel` and :func:`ood.plots.roc_panel`, as in the pipeline's figures.
"""
from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.collections import LineCollection
from matplotlib.patches import Patch
from torch import Tensor

from ood.analysis import SamplerPicks, as_float_images, energy_line, feature_norm_maps, feature_norms, grad_norm_table
from ood.metrics import auroc, fpr_at_tpr
from ood.models import OODNet
from ood.plots import histogram_panel, roc_panel, save

__all__ = [
    "COLORS", "feature_norm_figure", "feature_norm_hist_figure", "grad_norm_figure", "energy_line_figure",
    "sampler_picks_figure", "roc_threshold_figure",
]

#: One colour per role, the same in every figure of this module.
COLORS = {"id": "tab:blue", "ood": "tab:red", "background": "tab:orange", "aux": "tab:green"}


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def _hwc(x: Tensor) -> np.ndarray:
    """One image (3, H, W) in [0, 1] as an (H, W, 3) numpy array for imshow."""
    return as_float_images(x)[0].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _image_axes(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


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


def feature_norm_figure(models: Mapping[str, OODNet], x, y, ratio: float = 0.25,
                        class_names: Sequence[str] | None = None, path=None, pdf: bool = False):
    r"""BFM, where the local features are large: one row per image; the image, then for each model the map
    :math:`\lVert f_{hw}\rVert_2` of its last conv map (:func:`feature_norm_maps`) drawn over the image's
    extent, with the background positions BFM selects (ratio ``ratio``, label ``y``) outlined in cyan.
    One colour scale per row (shared by the models), so a lower background norm after BFM shows as a darker
    map. Each panel's label gives the mean norm on the selected background positions ("bg") and on the rest
    ("object")."""
    x = as_float_images(x)
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
    fig.legend(handles=[Patch(facecolor="none", edgecolor="cyan",
                              label=f"background positions BFM selects (ratio {ratio:g})")],
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


def energy_line_figure(models: Mapping[str, OODNet], x_id, x_out, n: int = 41,
                       margins: tuple[float, float] | None = None, labels: tuple[str, str] = ("ID image", "outlier"),
                       path=None, pdf: bool = False):
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
    x = as_float_images(aux_images)
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
    samples (:func:`ood.metrics.tpr_threshold`); the OOD mass right of :math:`t` is the FPR at 95% TPR. Right: the ROC
    curve (TPR = ID accepted, FPR = OOD accepted, as the threshold sweeps), the area under it shaded
    (AUROC) and the operating point at 95% TPR marked. The numbers come from :mod:`ood.metrics`; the two axes
    are :func:`ood.plots.histogram_panel` and :func:`ood.plots.roc_panel`, the threshold's span and the
    operating point drawn on top."""
    sid = np.asarray(torch.as_tensor(id_scores).detach().cpu().double()).ravel()
    sood = np.asarray(torch.as_tensor(ood_scores).detach().cpu().double()).ravel()
    fpr95, auc = fpr_at_tpr(sid, sood, tpr), auroc(sid, sood)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.4, 2.9), gridspec_kw={"width_ratios": [1.4, 1]})
    bins, thr = histogram_panel(a1, {"ID test": sid, ood_name: sood}, colors=(COLORS["id"], COLORS["ood"]), bins=50,
                                alpha=0.55, tpr=tpr, threshold_width=1.0,
                                threshold_label=f"threshold t (keeps {100 * tpr:.0f}% of ID)")
    a1.axvspan(thr, bins[-1], color="0.5", alpha=0.08, label="accepted as ID (score ≥ t)")
    a1.set_xlabel(f"{score_name} score (higher = more ID)")
    a1.set_ylabel("density")
    a1.set_title(f"Scores: ID test vs {ood_name}; OOD accepted (≥ t): FPR{100 * tpr:.0f} = {fpr95:.1f}%")
    a1.legend(frameon=False, fontsize=7, loc="upper right")
    # the curve's label starts with "_": no legend entry, the legend names the operating point only
    ((f, t),) = roc_panel(a2, sid, {f"_{ood_name}": sood}, colors=("k",), line_width=1.3, tpr=None).values()
    a2.fill_between(f, 0, t, color=COLORS["id"], alpha=0.12, step="post")
    a2.axhline(tpr, color="k", lw=0.6, ls=":")
    a2.plot(fpr95 / 100, tpr, "o", color=COLORS["ood"], ms=5, label=f"TPR {100 * tpr:.0f}%: FPR {fpr95:.1f}%")
    a2.text(0.55, 0.3, f"AUROC = {auc:.1f}%\n(shaded area)", fontsize=7, transform=a2.transAxes)
    a2.set_xlabel("FPR (fraction of OOD accepted)")
    a2.set_ylabel("TPR (fraction of ID accepted)")
    a2.set_title(f"ROC curve, {score_name}")
    a2.legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    return save(fig, path, pdf)


