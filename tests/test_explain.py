"""ood.explain on a tiny SmallNet and random tensors: shapes, masks, gradient norms against autograd's jacobian,
energy lines, sampler picks, the FPR95 threshold, the figures' axes (not pixels) and the tour's checkpoints."""
import copy
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ood import config, explain as X  # noqa: E402
from ood.data import ArrayDataset  # noqa: E402
from ood.losses import background_mask, energy  # noqa: E402
from ood.metrics import fpr_at_tpr  # noqa: E402
from ood.models import build_model  # noqa: E402


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    m = build_model("smallnet", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    # non-trivial BatchNorm statistics, so that eval mode differs from train mode
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.to(dtype).eval()


def _images(n, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- BFM: feature norms ---------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 1.0])
def test_feature_norm_maps_shapes_values_and_mask(ratio):
    m, x = _model(), _images(4)
    y = torch.tensor([0, 3, 7, 9])
    norms, mask = X.feature_norm_maps(m, x, y, ratio=ratio)
    assert norms.shape == (4, 8, 8) and mask.shape == (4, 8, 8) and mask.dtype == torch.bool
    with torch.no_grad():
        fmap = m.features(x)
    torch.testing.assert_close(norms, fmap.norm(dim=1))
    assert mask.flatten(1).sum(1).tolist() == [math.ceil(ratio * 64)] * 4
    torch.testing.assert_close(mask, background_mask(fmap, m.fc, y, selection="ratio", ratio=ratio))
    # the selected positions are those with the lowest per-position logit of the label
    pl = torch.einsum("bchw,kc->bkhw", fmap, m.fc.weight) + m.fc.bias.view(1, -1, 1, 1)
    s = pl[torch.arange(4), y]
    for b in range(4):
        if not mask[b].all():
            assert s[b][mask[b]].max() <= s[b][~mask[b]].min()


def test_feature_norm_maps_default_label_is_prediction_and_mode_restored():
    m, x = _model(), _images(3)
    m.train()
    with torch.no_grad():
        m.eval()
        pred = m(x).argmax(1)
        m.train()
    _, mask_none = X.feature_norm_maps(m, x, None)
    _, mask_pred = X.feature_norm_maps(m, x, pred)
    assert torch.equal(mask_none, mask_pred)
    assert m.training, "the model's training flag must be restored"


def test_feature_norms_flattened_and_batch_independent():
    m, x = _model(), _images(5)
    v = X.feature_norms(m, x)
    assert v.shape == (5 * 64,)
    norms, _ = X.feature_norm_maps(m, x, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(v, norms.flatten())
    torch.testing.assert_close(X.feature_norms(m, x, batch_size=2), v)
    # uint8 images are scaled to [0, 1]
    xu = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(X.feature_norms(m, xu), X.feature_norms(m, xu.float() / 255))


# --- GReg: input gradient norms, energy along a line ----------------------------------------------

def test_input_grad_norms_match_jacobian_wrt_normalized_input():
    m = _model(dtype=torch.float64)
    x = _images(3).double()
    g = X.input_grad_norms(m, x, batch_size=2)
    assert g.shape == (3,)
    for i in range(3):
        xn = m.normalize(x[i:i + 1])
        jac = torch.autograd.functional.jacobian(lambda inp: energy(m.head(m.pool(m.body(inp))))[0], xn)
        assert g[i].item() == pytest.approx(jac.norm().item(), rel=1e-9)
        # w.r.t. the pixels the norm would be 1/std = 4 times larger: the function must not use that one
        jx = torch.autograd.functional.jacobian(lambda inp: energy(m(inp))[0], x[i:i + 1])
        assert jx.norm().item() == pytest.approx(4 * g[i].item(), rel=1e-9)


def test_input_grad_norms_finite_difference_and_no_side_effects():
    m = _model(dtype=torch.float64)
    x = _images(2, seed=1).double()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    g = X.input_grad_norms(m, x)
    assert m.training
    m.eval()
    assert all(p.grad is None for p in m.parameters()), "no parameter gradient may be written"
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items()), "nothing may be updated"
    # directional finite difference along the gradient direction equals the norm (in normalized space)
    xn = m.normalize(x[:1]).requires_grad_(True)
    e = energy(m.head(m.pool(m.body(xn))))
    (grad,) = torch.autograd.grad(e.sum(), xn)
    d, h = grad / grad.norm(), 1e-5
    with torch.no_grad():
        fd = (energy(m.head(m.pool(m.body(xn + h * d)))) - energy(m.head(m.pool(m.body(xn - h * d))))) / (2 * h)
    assert fd.item() == pytest.approx(g[0].item(), rel=1e-5)


def test_energy_line_endpoints_and_midpoint():
    m, x = _model(), _images(2, seed=2)
    t, e = X.energy_line(m, x[0], x[1], n=5)
    assert t.shape == (5,) and e.shape == (5,) and t[0] == 0 and t[-1] == 1
    with torch.no_grad():
        ends = energy(m(x))
        mid = energy(m(0.5 * x[:1] + 0.5 * x[1:]))
        quarter = energy(m(0.75 * x[:1] + 0.25 * x[1:]))  # t = 0.25: closer to x_a
    torch.testing.assert_close(e[[0, -1]], ends, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e[2:3], mid, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e[1:2], quarter, rtol=1e-5, atol=1e-5)
    t2, e2 = X.energy_line(m, x[:1], x[1:], n=41)  # (1, 3, H, W) works the same
    assert len(e2) == 41 and e2[0].item() == pytest.approx(e[0].item(), abs=1e-5)
    with pytest.raises(ValueError, match="n=1"):
        X.energy_line(m, x[0], x[1], n=1)
    with pytest.raises(ValueError, match="one image per end"):
        X.energy_line(m, x, x)


# --- GReg+: sampler picks -------------------------------------------------------------------------

def test_sampler_picks_valid_distinct_and_cover_energy_extremes():
    m = _model()
    pool = (_images(60, seed=3) * 255).to(torch.uint8)
    p = X.sampler_picks(m, pool, 12, seed=0)
    for idx in (p.cluster, p.random):
        assert idx.shape == (12,) and idx.dtype == torch.int64
        assert len(set(idx.tolist())) == 12 and 0 <= idx.min() and idx.max() < 60
    assert p.energies.shape == (60,) and p.num_clusters == 6
    with torch.no_grad():
        torch.testing.assert_close(p.energies, energy(m(pool.float() / 255)), rtol=1e-5, atol=1e-5)
    # the lowest and the highest energy of the pool are the extremes of their clusters: always picked
    assert int(p.energies.argmin()) in p.cluster.tolist() and int(p.energies.argmax()) in p.cluster.tolist()
    q = X.sampler_picks(m, pool, 12, seed=0)
    assert torch.equal(p.cluster, q.cluster) and torch.equal(p.random, q.random)
    with pytest.raises(ValueError, match="n_pick"):
        X.sampler_picks(m, pool, 61)


# --- metrics: the FPR95 threshold -----------------------------------------------------------------

@pytest.mark.parametrize("n_id", [20, 99, 100, 1000])
def test_tpr_threshold_is_the_fpr95_operating_point(n_id):
    rng = np.random.default_rng(n_id)
    sid, sood = rng.normal(1, 1, n_id), rng.normal(0, 1, 300)
    t = X.tpr_threshold(sid, 0.95)
    # by hand: the ceil(0.95 n)-th largest ID score keeps at least 95% of ID; FPR95 = % of OOD at or above it
    t_hand = np.sort(sid)[::-1][math.ceil(0.95 * n_id) - 1]
    assert t == t_hand and np.mean(sid >= t) >= 0.95
    assert fpr_at_tpr(sid, sood, 0.95) == pytest.approx(100 * np.count_nonzero(sood >= t_hand) / len(sood))
    assert X.tpr_threshold([3.0, 1.0, 2.0, 0.0], 0.5) == 2.0  # ceil(0.5 * 4) = 2nd largest


# --- figures --------------------------------------------------------------------------------------

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
    assert len(X._mask_outline(np.array([[True]]), 4)) == 4
    assert len(X._mask_outline(np.ones((2, 2), bool), 4)) == 8
    assert len(X._mask_outline(np.array([[True, False], [False, True]]), 4)) == 8
    assert X._mask_outline(np.zeros((3, 3), bool), 4) == []


def test_feature_norm_figure(tmp_path):
    models = {"CE": _model(0), "BFM": _model(1)}
    x, y = _images(2), torch.tensor([1, 2])
    fig = X.feature_norm_figure(models, x, y, ratio=0.25, class_names=[f"c{i}" for i in range(10)],
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
    fig = X.feature_norm_hist_figure(models, _images(4), _images(3, 1), y_id=torch.arange(4), path=tmp_path / "h")
    assert (tmp_path / "h.png").is_file()
    assert [ax.get_title() for ax in fig.axes] == ["CE", "BFM"]
    assert all(ax.get_xlabel() == "local feature norm ‖f_hw‖₂" for ax in fig.axes)
    assert fig.axes[0].get_ylabel() == "density"
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["ID, object positions", "ID, selected background positions", "background-only images (OOD)"]
    fig = X.feature_norm_hist_figure(models, _images(4), _images(3, 1))
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()][0] == "ID images"


def test_grad_norm_figure(tmp_path):
    models = {"CE": _model(0), "GReg": _model(1)}
    sets = {"ID test": _images(4), "auxiliary": _images(4, 1), "noise": _images(3, 2)}
    fig = X.grad_norm_figure(models, sets, path=tmp_path / "g")
    assert (tmp_path / "g.png").is_file()
    (ax,) = fig.axes
    assert ax.get_title() == "Input-gradient norm of the energy E(x) = -logsumexp f(x)"
    assert "∂E/∂x̃" in ax.get_ylabel() and ax.get_xlabel() == "samples" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == list(sets)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(models)


def test_energy_line_figure(tmp_path):
    models = {"CE": _model(0), "GReg": _model(1)}
    x = _images(2)
    fig = X.energy_line_figure(models, x[0], x[1], n=7, margins=(-3.0, -1.0), path=tmp_path / "e")
    assert (tmp_path / "e.png").is_file()
    ax = fig.axes[1]
    assert ax.get_title() == "Energy along the line from an ID image to an outlier"
    assert ax.get_ylabel().startswith("energy E(x_t)") and ax.get_xlabel().startswith("t ")
    assert [fig.axes[0].get_title(), fig.axes[2].get_title()] == ["t = 0: ID image", "t = 1: outlier"]
    curves = {l.get_label(): l.get_ydata() for l in ax.get_lines() if l.get_label() in models}
    for name, m in models.items():  # the plotted curve is energy_line's, endpoints included
        with torch.no_grad():
            ends = energy(m(x)).numpy()
        assert len(curves[name]) == 7
        np.testing.assert_allclose(curves[name][[0, -1]], ends, rtol=1e-5, atol=1e-5)


def test_sampler_picks_figure(tmp_path):
    m = _model()
    pool = _images(40)
    p = X.sampler_picks(m, pool, 10, seed=1)
    fig = X.sampler_picks_figure(pool, p, n_show=8, path=tmp_path / "s")
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
    fig = X.roc_threshold_figure(sid, sood, "energy", "backgrounds", path=tmp_path / "r")
    assert (tmp_path / "r.png").is_file()
    a1, a2 = fig.axes
    fpr = fpr_at_tpr(sid, sood)
    assert a1.get_title() == f"Scores: ID test vs backgrounds; OOD accepted (≥ t): FPR95 = {fpr:.1f}%"
    assert a1.get_xlabel() == "energy score (higher = more ID)" and a1.get_ylabel() == "density"
    assert a2.get_title() == "ROC curve, energy" and a2.get_xlabel().startswith("FPR") and a2.get_ylabel().startswith("TPR")
    thr = [l for l in a1.get_lines() if l.get_linestyle() == "--"][0]
    assert thr.get_xdata()[0] == pytest.approx(X.tpr_threshold(sid))
    point = [l for l in a2.get_lines() if l.get_marker() == "o"][0]
    assert point.get_xdata()[0] == pytest.approx(fpr / 100) and point.get_ydata()[0] == pytest.approx(0.95)


# --- the tour's parameters and checkpoints --------------------------------------------------------

def _tour_values(**kw):
    v = dict(profile="synthetic", device="cpu", use_pipeline_runs=True, run_root="runs/tour", scratch_epochs=4,
             finetune_steps=None, bfm_ratio=None, grad_weight=0.5, n_show=4, n_pick=32, seed=0)
    v.update(kw)
    return v


def test_tour_parameters_are_checked():
    P = config.check_notebook_params("tour", _tour_values(), before=[])
    assert P.bfm_ratio is None and P.grad_weight == 0.5
    with pytest.raises(config.ParamError, match="bfm_ratio"):
        config.check_notebook_params("tour", _tour_values(bfm_ratio=1.5), before=[])
    with pytest.raises(config.ParamError, match="scratch_epochs"):
        config.check_notebook_params("tour", _tour_values(scratch_epochs=0), before=[])
    with pytest.raises(config.ParamError, match="unknown parameter 'ratio'"):
        config.check_notebook_params("tour", {**_tour_values(), "ratio": 0.5}, before=[])


def _tiny_setup():
    params = copy.deepcopy(config.load_params())
    for r in params["synthetic"]["recipes"].values():
        r["batch_size"] = 16
        if r.get("out_batch_size"):
            r["out_batch_size"] = 16
    g = torch.Generator().manual_seed(0)

    def ds(name, n, labelled):
        y = torch.randint(0, 10, (n,), generator=g) if labelled else torch.full((n,), -1)
        return ArrayDataset(name, torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), y.long())

    from ood.pipeline import Benchmark

    bench = Benchmark("synthetic", ds("train", 48, True), ds("test", 16, True), {}, ds("aux", 48, False), 10)
    return params, bench


def test_tour_models_trains_reloads_and_prefers_matching_pipeline_runs(tmp_path):
    params, bench = _tiny_setup()
    kw = dict(scratch_epochs=1, finetune_steps=2, bench=bench, pipeline_root=tmp_path / "repo")
    runs = X.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour", **kw)
    assert [r.source for r in runs.values()] == ["tour", "tour"]
    assert runs["greg"].run_dir.name.startswith("greg-") and (runs["greg"].run_dir / "model.pt").is_file()
    assert len(runs["greg"].history) == 1 and not runs["greg"].model.training
    assert len(runs["ce"].history) == 1  # scratch_epochs
    meta = torch.load(runs["greg"].run_dir / "model.pt", weights_only=True)["meta"]["config"]
    assert meta["steps_per_epoch"] == 2 and meta["init"] == "ce"  # finetune_steps
    assert runs["greg"].terms["grad_penalty"]["scaling"] == "authors"  # defaults filled in
    assert runs["greg"].terms["grad_penalty"]["weight"] == params["synthetic"]["method"]["greg"]["terms"]["grad_penalty"]["weight"]
    # same settings: the same run folders are reloaded
    again = X.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour", **kw)
    assert again["greg"].run_dir == runs["greg"].run_dir
    # a changed loss term trains anew
    other = X.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour",
                          terms={"greg": {"grad_penalty": {"weight": 0.0}}}, **kw)
    assert other["greg"].run_dir != runs["greg"].run_dir and other["greg"].terms["grad_penalty"]["weight"] == 0.0
    same = X.tour_models(params, ["ce", "greg"], run_root=tmp_path / "tour",
                         terms={"greg": {"grad_penalty": {"weight": None}}}, **kw)  # None: params.yaml's
    assert same["greg"].run_dir == runs["greg"].run_dir
    with pytest.raises(ValueError, match="list 'ce' before it"):
        X.tour_models(params, ["greg"], run_root=tmp_path / "tour", use_pipeline_runs=False, **kw)

    # a pipeline checkpoint with the same loss terms is used; one trained otherwise is not
    import shutil

    pipe = tmp_path / "repo" / "runs" / "synthetic" / "ce" / "seeds" / "0"  # the first seed of params.yaml
    pipe.mkdir(parents=True)
    shutil.copy(runs["ce"].run_dir / "model.pt", pipe / "model.pt")
    got = X.tour_models(params, ["ce", "greg_plus"], run_root=tmp_path / "tour", pipeline_only=("greg_plus",), **kw)
    assert got["ce"].source == "pipeline" and got["ce"].run_dir == pipe and "greg_plus" not in got
    got = X.tour_models(params, ["ce"], run_root=tmp_path / "tour", use_pipeline_runs=False, **kw)
    assert got["ce"].source == "tour"
    got = X.tour_models(params, ["ce"], run_root=tmp_path / "tour", terms={"ce": {"ce": {"weight": 2.0}}}, **kw)
    assert got["ce"].source == "tour", "a pipeline checkpoint trained with other loss terms must not be used"
    got = X.tour_models(params, ["ce"], run_root=tmp_path / "tour", terms={"ce": {"ce": {"weight": 1.0}}}, **kw)
    assert got["ce"].source == "pipeline", "the default value of a term parameter is the same configuration"
    (pipe.parent / "bfm").mkdir()
    shutil.copy(pipe / "model.pt", pipe.parent / "bfm" / "model.pt")  # a CE checkpoint where BFM's should be
    got = X.tour_models(params, ["bfm"], run_root=tmp_path / "tour", **kw)
    assert got["bfm"].source == "tour"
    with pytest.raises(ValueError, match="no loss term 'background'"):
        X.tour_models(params, ["ce"], run_root=tmp_path / "tour", terms={"ce": {"background": {"ratio": 0.5}}}, **kw)


def test_evaluate_scores_same_metrics_with_fewer_train_images():
    from ood.evaluate import evaluate

    from ood.pipeline import Benchmark

    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (640, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (640,), generator=g)
    bench = Benchmark("b", ArrayDataset("train", imgs[:600], labels[:600]), ArrayDataset("test", imgs[600:620], labels[600:620]),
                      {"other": ArrayDataset("other", imgs[620:], torch.full((20,), -1))}, None, 10)
    m = _model()
    full = evaluate(m, id_train=bench.id_train, id_test=bench.id_test, ood_sets=bench.ood,
                    scorers={"msp": {}, "knn": {"k": 550}}, benchmark="b", method="x", progress=False)
    got = X.evaluate_scores(m, bench, {"msp": {}}, "x")
    assert got.metrics["fpr95"].tolist() == full.metrics.query("scorer == 'msp'")["fpr95"].tolist()
    # a fitted scorer sees all 600 ID-train images (k = 550 > 500 fails on fewer)
    got = X.evaluate_scores(m, bench, {"knn": {"k": 550}}, "x")
    assert got.metrics["auroc"].tolist() == full.metrics.query("scorer == 'knn'")["auroc"].tolist()


def test_confidence_table_counts_and_fpr95_column():
    rng = np.random.default_rng(0)
    scores = {"msp/id": rng.uniform(0.5, 1, 200), "msp/a": rng.uniform(0.1, 1, 100), "msp/b": np.full(50, 0.95)}
    t = X.confidence_table(scores, ["a", "b"], threshold=0.9)
    assert list(t.index) == ["ID test", "a", "b"]
    assert t.loc["b", "% with max-softmax >= 0.9"] == 100.0 and t.loc["b", "mean max-softmax"] == pytest.approx(0.95)
    t95 = np.sort(scores["msp/id"])[::-1][math.ceil(0.95 * 200) - 1]  # by hand: the 190th largest of 200 ID scores
    assert t.loc["a", "% accepted at 95% TPR"] == pytest.approx(100 * np.mean(scores["msp/a"] >= t95))
    assert t.loc["ID test", "% accepted at 95% TPR"] >= 95
