"""ood.analysis on a tiny SmallNet and random tensors: shapes, masks, gradient norms against autograd's jacobian,
energy lines, sampler picks and the tour's small tables."""
import math

import numpy as np
import pytest
import torch

from ood import analysis
from ood.data import ArrayDataset
from ood.losses import background_mask, energy
from tiny_net import tiny_images as _images, tiny_model as _model

# --- BFM: feature norms ---------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.5, 1.0])
def test_feature_norm_maps_shapes_values_and_mask(ratio):
    m, x = _model(), _images(4)
    y = torch.tensor([0, 3, 7, 9])
    norms, mask = analysis.feature_norm_maps(m, x, y, ratio=ratio)
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
    _, mask_none = analysis.feature_norm_maps(m, x, None)
    _, mask_pred = analysis.feature_norm_maps(m, x, pred)
    assert torch.equal(mask_none, mask_pred)
    assert m.training, "the model's training flag must be restored"


def test_feature_norms_flattened_and_batch_independent():
    m, x = _model(), _images(5)
    v = analysis.feature_norms(m, x)
    assert v.shape == (5 * 64,)
    norms, _ = analysis.feature_norm_maps(m, x, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(v, norms.flatten())
    torch.testing.assert_close(analysis.feature_norms(m, x, batch_size=2), v)
    # uint8 images are scaled to [0, 1]
    xu = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(analysis.feature_norms(m, xu), analysis.feature_norms(m, xu.float() / 255))


# --- GReg: input gradient norms, energy along a line ----------------------------------------------

def test_input_grad_norms_match_jacobian_wrt_normalized_input():
    m = _model(dtype=torch.float64)
    x = _images(3).double()
    g = analysis.input_grad_norms(m, x, batch_size=2)
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
    g = analysis.input_grad_norms(m, x)
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
    t, e = analysis.energy_line(m, x[0], x[1], n=5)
    assert t.shape == (5,) and e.shape == (5,) and t[0] == 0 and t[-1] == 1
    with torch.no_grad():
        ends = energy(m(x))
        mid = energy(m(0.5 * x[:1] + 0.5 * x[1:]))
        quarter = energy(m(0.75 * x[:1] + 0.25 * x[1:]))  # t = 0.25: closer to x_a
    torch.testing.assert_close(e[[0, -1]], ends, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e[2:3], mid, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e[1:2], quarter, rtol=1e-5, atol=1e-5)
    t2, e2 = analysis.energy_line(m, x[:1], x[1:], n=41)  # (1, 3, H, W) works the same
    assert len(e2) == 41 and e2[0].item() == pytest.approx(e[0].item(), abs=1e-5)
    with pytest.raises(ValueError, match="n=1"):
        analysis.energy_line(m, x[0], x[1], n=1)
    with pytest.raises(ValueError, match="one image per end"):
        analysis.energy_line(m, x, x)


# --- GReg+: sampler picks -------------------------------------------------------------------------

def test_sampler_picks_valid_distinct_and_cover_energy_extremes():
    m = _model()
    pool = (_images(60, seed=3) * 255).to(torch.uint8)
    p = analysis.sampler_picks(m, pool, 12, seed=0)
    for idx in (p.cluster, p.random):
        assert idx.shape == (12,) and idx.dtype == torch.int64
        assert len(set(idx.tolist())) == 12 and 0 <= idx.min() and idx.max() < 60
    assert p.energies.shape == (60,) and p.num_clusters == 6
    with torch.no_grad():
        torch.testing.assert_close(p.energies, energy(m(pool.float() / 255)), rtol=1e-5, atol=1e-5)
    # the lowest and the highest energy of the pool are the extremes of their clusters: always picked
    assert int(p.energies.argmin()) in p.cluster.tolist() and int(p.energies.argmax()) in p.cluster.tolist()
    q = analysis.sampler_picks(m, pool, 12, seed=0)
    assert torch.equal(p.cluster, q.cluster) and torch.equal(p.random, q.random)
    with pytest.raises(ValueError, match="n_pick"):
        analysis.sampler_picks(m, pool, 61)


# --- the tour's small tables ----------------------------------------------------------------------

def test_evaluate_scores_same_metrics_with_fewer_train_images():
    from ood.benchmark import Benchmark
    from ood.evaluate import evaluate

    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (640, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (640,), generator=g)
    bench = Benchmark("b", ArrayDataset("train", imgs[:600], labels[:600]),
                      ArrayDataset("test", imgs[600:620], labels[600:620]),
                      {"other": ArrayDataset("other", imgs[620:], torch.full((20,), -1))}, None, 10)
    m = _model()
    full = evaluate(m, id_train=bench.id_train, id_test=bench.id_test, ood_sets=bench.ood,
                    scorers={"msp": {}, "knn": {"k": 550}}, benchmark="b", method="x", progress=False)
    got = analysis.evaluate_scores(m, bench, {"msp": {}}, "x")
    assert got.metrics["fpr95"].tolist() == full.metrics.query("scorer == 'msp'")["fpr95"].tolist()
    # a fitted scorer sees all 600 ID-train images (k = 550 > 500 fails on fewer)
    got = analysis.evaluate_scores(m, bench, {"knn": {"k": 550}}, "x")
    assert got.metrics["auroc"].tolist() == full.metrics.query("scorer == 'knn'")["auroc"].tolist()


def test_confidence_table_counts_and_fpr95_column():
    rng = np.random.default_rng(0)
    scores = {"msp/id": rng.uniform(0.5, 1, 200), "msp/a": rng.uniform(0.1, 1, 100), "msp/b": np.full(50, 0.95)}
    t = analysis.confidence_table(scores, ["a", "b"], threshold=0.9)
    assert list(t.index) == ["ID test", "a", "b"]
    assert t.loc["b", "% with max-softmax >= 0.9"] == 100.0 and t.loc["b", "mean max-softmax"] == pytest.approx(0.95)
    t95 = np.sort(scores["msp/id"])[::-1][math.ceil(0.95 * 200) - 1]  # by hand: the 190th largest of 200 ID scores
    assert t.loc["a", "% accepted at 95% TPR"] == pytest.approx(100 * np.mean(scores["msp/a"] >= t95))
    assert t.loc["ID test", "% accepted at 95% TPR"] >= 95
