"""ood.illustrations on a tiny SmallNet and random tensors: the figures' panels, titles, labels and legends (not
pixels) and that they draw ood.analysis's numbers."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ood import analysis, illustrations  # noqa: E402
from ood.losses import energy  # noqa: E402
from ood.metrics import fpr_at_tpr, tpr_threshold  # noqa: E402
from tiny_net import tiny_images as _images, tiny_model as _model  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig):
    out = []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        leg = ax.get_legend()
        if leg:
            out += [t.get_text() for t in leg.get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return out


def test_mask_outline_segments():
    assert len(illustrations._mask_outline(np.array([[True]]), 4)) == 4
    assert len(illustrations._mask_outline(np.ones((2, 2), bool), 4)) == 8
    assert len(illustrations._mask_outline(np.array([[True, False], [False, True]]), 4)) == 8
    assert illustrations._mask_outline(np.zeros((3, 3), bool), 4) == []


def test_feature_norm_figure(tmp_path):
    models = {"CE": _model(0), "BFM": _model(1)}
    x, y = _images(2), torch.tensor([1, 2])
    fig = illustrations.feature_norm_figure(models, x, y, ratio=0.25, class_names=[f"c{i}" for i in range(10)],
                                            path=tmp_path / "fnorm", pdf=True)
    assert (tmp_path / "fnorm.png").stat().st_size > 0 and (tmp_path / "fnorm.pdf").is_file()
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:6]
    assert [ax.get_title() for ax in grid[:3]] == ["image", "CE: feature norm", "BFM: feature norm"]
    assert grid[0].get_ylabel() == "c1" and grid[3].get_ylabel() == "c2"
    assert all(ax.get_xlabel().startswith("bg ") and "object" in ax.get_xlabel() for ax in grid[1:3] + grid[4:6])
    assert all(len(ax.collections) == 1 and len(ax.collections[0].get_segments()) >= 4 for ax in grid[1:3])
    assert any("background positions BFM selects (ratio 0.25)" in t for t in _texts(fig))


def test_feature_norm_hist_figure(tmp_path):
    models = {"CE": _model(0), "BFM": _model(1)}
    fig = illustrations.feature_norm_hist_figure(models, _images(4), _images(3, 1), y_id=torch.arange(4),
                                                 path=tmp_path / "h")
    assert (tmp_path / "h.png").is_file()
    assert [ax.get_title() for ax in fig.axes] == ["CE", "BFM"]
    assert all(ax.get_xlabel() == "local feature norm ‖f_hw‖₂" for ax in fig.axes)
    assert fig.axes[0].get_ylabel() == "density"
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["ID, object positions", "ID, selected background positions", "background-only images (OOD)"]
    fig = illustrations.feature_norm_hist_figure(models, _images(4), _images(3, 1))
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()][0] == "ID images"


def test_grad_norm_figure(tmp_path):
    models = {"CE": _model(0), "GReg": _model(1)}
    sets = {"ID test": _images(4), "auxiliary": _images(4, 1), "noise": _images(3, 2)}
    fig = illustrations.grad_norm_figure(models, sets, path=tmp_path / "g")
    assert (tmp_path / "g.png").is_file()
    (ax,) = fig.axes
    assert ax.get_title() == "Input-gradient norm of the energy E(x) = -logsumexp f(x)"
    assert "∂E/∂x̃" in ax.get_ylabel() and ax.get_xlabel() == "samples" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(sets)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(models)


def test_energy_line_figure(tmp_path):
    models = {"CE": _model(0), "GReg": _model(1)}
    x = _images(2)
    fig = illustrations.energy_line_figure(models, x[0], x[1], n=7, margins=(-3.0, -1.0), path=tmp_path / "e")
    assert (tmp_path / "e.png").is_file()
    ax = fig.axes[1]
    assert ax.get_title() == "Energy along the line from an ID image to an outlier"
    assert ax.get_ylabel().startswith("energy E(x_t)") and ax.get_xlabel().startswith("t ")
    assert [fig.axes[0].get_title(), fig.axes[2].get_title()] == ["t = 0: ID image", "t = 1: outlier"]
    curves = {ln.get_label(): ln.get_ydata() for ln in ax.get_lines() if ln.get_label() in models}
    for name, m in models.items():  # the plotted curve is energy_line's, endpoints included
        with torch.no_grad():
            ends = energy(m(x)).numpy()
        assert len(curves[name]) == 7
        np.testing.assert_allclose(curves[name][[0, -1]], ends, rtol=1e-5, atol=1e-5)


def test_sampler_picks_figure(tmp_path):
    m = _model()
    pool = _images(40)
    p = analysis.sampler_picks(m, pool, 10, seed=1)
    fig = illustrations.sampler_picks_figure(pool, p, n_show=8, path=tmp_path / "s")
    assert (tmp_path / "s.png").is_file()
    hist = fig.axes[0]
    assert hist.get_title() == "Which auxiliary outliers enter the training step"
    assert hist.get_xlabel().startswith("energy E of the auxiliary candidate") and hist.get_ylabel() == "candidates"
    legend = [t.get_text() for t in hist.get_legend().get_texts()]
    assert legend == ["candidate pool (40)", "GReg+ sampler (k=5 clusters) picks", "random sampler picks"]
    images = fig.axes[1:]
    assert len(images) == 16 and sum(len(a.images) for a in images) == 16
    assert [a.get_ylabel() for a in images if a.get_ylabel()] == ["GReg+\nsampler", "random\nsampler"]


def test_roc_threshold_figure(tmp_path):
    rng = np.random.default_rng(0)
    sid, sood = rng.normal(2, 1, 400), rng.normal(0, 1, 300)
    fig = illustrations.roc_threshold_figure(sid, sood, "energy", "backgrounds", path=tmp_path / "r")
    assert (tmp_path / "r.png").is_file()
    a1, a2 = fig.axes
    fpr = fpr_at_tpr(sid, sood)
    assert a1.get_title() == f"Scores: ID test vs backgrounds; OOD accepted (≥ t): FPR95 = {fpr:.1f}%"
    assert a1.get_xlabel() == "energy score (higher = more ID)" and a1.get_ylabel() == "density"
    assert (a2.get_title() == "ROC curve, energy" and a2.get_xlabel().startswith("FPR")
            and a2.get_ylabel().startswith("TPR"))
    thr = [ln for ln in a1.get_lines() if ln.get_linestyle() == "--"][0]
    assert thr.get_xdata()[0] == pytest.approx(tpr_threshold(sid))
    point = [ln for ln in a2.get_lines() if ln.get_marker() == "o"][0]
    assert point.get_xdata()[0] == pytest.approx(fpr / 100) and point.get_ydata()[0] == pytest.approx(0.95)
