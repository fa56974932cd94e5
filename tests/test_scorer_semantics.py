"""Each post-hoc scorer's distinctive step against an oracle written here with numpy (or plain torch autograd for
ODIN's input gradient): the scorers are called through their public interface (``build_scorer``, ``fit_features``,
``score_features``, ``score``); no helper of ``ood`` computes an expected value.

Covered here: the logit scores through their scorer classes (MSP, MaxLogit, energy with its temperature, the
entropy's sign), ODIN on a small convolutional network (temperature, input-gradient sign, eval mode), ReAct
(clip at the 0-100 percentile of every ID-train activation), ASH-P/B/S through their scorer classes (per-sample
top-k, binarize, scale), DICE (contribution mask with unequal mean activations and the strict ``>`` at an exact
order statistic), Mahalanobis (class means and the pooled covariance with unbalanced classes and non-contiguous
labels). KNN, GradNorm and ViM are pinned by the same kind of oracle in tests/test_scorers.py and
tests/test_oracles.py and are not repeated.
"""
import copy

import numpy as np
import pytest
import torch

from ood import scorers
from ood.models import SmallNet


def _lse(z):
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _head(k, width, seed):
    """A float64 SmallNet whose linear head (D = 4 * width -> k) gets random weights and bias; returns (model, W, b)."""
    torch.manual_seed(seed)
    model = SmallNet(k, width=width).double().eval()
    rng = np.random.default_rng(seed)
    W, b = rng.normal(size=(k, 4 * width)), rng.normal(size=k)
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(W))
        model.fc.bias.copy_(torch.from_numpy(b))
    return model, W, b


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# ---------------------------------------------------------------------------------------------------------------
# logit scores through their scorer classes
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1.0, 2.5, 0.4])
def test_logit_scorers_match_their_definitions(T):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 5)) * 3
    logits[0] = [9.0, 0.0, 0.0, 0.0, 0.0]                    # confident
    logits[1] = 0.0                                           # uniform
    lg = _t(logits)
    p = _softmax(logits)
    got = {n: scorers.build_scorer(n).score_features(None, lg, None).double().numpy()
           for n in ("msp", "maxlogit", "entropy")}
    np.testing.assert_allclose(got["msp"], p.max(1), rtol=1e-12)
    np.testing.assert_allclose(got["maxlogit"], logits.max(1), rtol=1e-12)
    np.testing.assert_allclose(got["entropy"], (p * np.log(p)).sum(1), rtol=1e-10, atol=1e-12)
    e = scorers.build_scorer("energy", T=T).score_features(None, lg, None).double().numpy()
    np.testing.assert_allclose(e, T * _lse(logits / T), rtol=1e-10)
    # higher = more ID: the confident row above the uniform one for every score
    for s in (*got.values(), e):
        assert s[0] > s[1]
    assert got["entropy"][1] == pytest.approx(-np.log(5), rel=1e-12) and got["entropy"].max() <= 0


# ---------------------------------------------------------------------------------------------------------------
# ODIN on a small convolutional network
# ---------------------------------------------------------------------------------------------------------------

def _odin_net():
    """A float64 width-2 SmallNet (3 classes) with non-trivial BatchNorm statistics (eval mode differs from train
    mode), left in train mode: ODIN must switch to eval mode itself."""
    torch.manual_seed(4)
    m = SmallNet(3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), width=2).double()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        m.fc.weight.mul_(4.0)
    return m.train()


def _odin_oracle(model, x, T, eps):
    """Liang et al. 2018, Eq. 2: x~ = x - eps * sign(-grad_x log S_yhat(x; T)), S(.; T) = softmax(f / T), yhat the
    predicted class; the score is max_c S_c(x~; T). sign(0) counts as +1 (the code's torch.ge(grad, 0)). The
    network in eval mode; per-sample losses summed (the gradient of each sample's loss is its own)."""
    net = copy.deepcopy(model).eval()
    xg = x.clone().requires_grad_(True)
    f = net(xg)
    yhat = f.argmax(1)
    nll = -(torch.log_softmax(f / T, 1).gather(1, yhat[:, None])).sum()
    (g,) = torch.autograd.grad(nll, xg)
    g = g.numpy()
    x_t = x.numpy() - eps * np.where(g >= 0, 1.0, -1.0)
    with torch.no_grad():
        f_t = net(torch.from_numpy(x_t)).numpy()
        f_0 = net(x).numpy()
    return _softmax(f_t / T).max(1), _softmax(f_0 / T).max(1), x_t


@pytest.mark.parametrize("T, eps", [(1000.0, 0.0014), (2.0, 0.02), (1.0, 0.005)])
def test_odin_matches_the_paper_on_a_conv_net(T, eps):
    model = _odin_net()
    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want, plain, x_t = _odin_oracle(model, x, T, eps)
    odin = scorers.build_scorer("odin", T=T, eps=eps)
    np.testing.assert_allclose(odin.perturb(model.eval(), x).numpy(), x_t, rtol=0, atol=1e-12)
    model.train()
    got = odin.score(model, x).double().numpy()
    assert model.training                                          # the flag is restored
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    # the step moves the input to raise the tempered confidence (one signed step of size eps on each pixel)
    assert (want > plain).mean() >= 0.9
    assert np.abs(x_t - x.numpy()).max() == pytest.approx(eps, rel=1e-12)
    # not vacuous: the step changes the scores by far more than the tolerance
    assert np.abs(want - plain).max() > 1e3 * 1e-9 * np.abs(want).max()


# ---------------------------------------------------------------------------------------------------------------
# ReAct, ASH, DICE
# ---------------------------------------------------------------------------------------------------------------

def _relu_features(rng, n, d):
    """Post-ReLU-like features: exponential activations with unit-dependent scales, about 30 % exact zeros."""
    h = rng.exponential(size=(n, d)) * rng.uniform(0.3, 3.0, size=(1, d))
    h[rng.random(size=(n, d)) < 0.3] = 0.0
    return h


@pytest.mark.parametrize("p", [80.0, 37.5])
def test_react_clips_at_the_percentile_of_all_train_activations(p):
    model, W, b = _head(4, 2, seed=2)                         # D = 8
    rng = np.random.default_rng(2)
    train, test = _relu_features(rng, 60, 8), _relu_features(rng, 15, 8) * 1.5
    c = np.percentile(train.ravel(), p)                       # over samples and units, linear, 0-100 scale
    react = scorers.build_scorer("react", percentile=p)
    react.fit_features(_t(train), _t(train @ W.T + b), torch.zeros(60, dtype=torch.long), model)
    assert react.threshold == pytest.approx(c, rel=1e-12)
    want = _lse(np.minimum(test, c) @ W.T + b)
    got = react.score_features(_t(test), _t(test @ W.T + b), model).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert (test > c).any() and (test < c).any()             # some activations are clipped, some are not
    assert np.abs(want - _lse(test @ W.T + b)).max() > 1e-3   # clipping matters


def _ash_oracle(h, p, kind):
    """ASH on each row independently: keep the k = D - round(D p / 100) largest entries (rank by argsort), zero the
    rest; B: each kept entry = s1 / k; S: the pruned row times exp(s1 / s2); s1, s2 the row sums before / after."""
    n, d = h.shape
    k = d - int(np.round(d * p / 100.0))
    out = np.zeros_like(h)
    for r in range(n):
        keep = np.argsort(-h[r])[:k]
        s1, s2 = h[r].sum(), h[r, keep].sum()
        if kind == "p":
            out[r, keep] = h[r, keep]
        elif kind == "b":
            out[r, keep] = s1 / k
        else:
            out[r, keep] = h[r, keep] * np.exp(s1 / s2)
    return out, k


@pytest.mark.parametrize("name", ["ash_p", "ash_b", "ash_s"])
@pytest.mark.parametrize("p", [65.0, 85.0])
def test_ash_scorers_shape_each_sample_then_score_energy(name, p):
    model, W, b = _head(5, 5, seed=3)                         # D = 20
    rng = np.random.default_rng(3)
    h = rng.exponential(size=(9, 20)) * rng.uniform(0.2, 3.0, size=(9, 1))   # rows on very different scales
    shaped, k = _ash_oracle(h, p, name[-1])
    assert k == {65.0: 7, 85.0: 3}[p]                         # 20 - round(13), 20 - round(17)
    got = scorers.build_scorer(name, percentile=p).score_features(_t(h), _t(h @ W.T + b), model).double().numpy()
    want = _lse(shaped @ W.T + b)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # the three shapings give three different scores on these features (the scorer class uses its own)
    others = {o: _lse(_ash_oracle(h, p, o[-1])[0] @ W.T + b) for o in ("ash_p", "ash_b", "ash_s") if o != name}
    for o, v in others.items():
        assert np.abs(v - want).max() > 1e-3, o


def _dice_oracle(train, W, b, test, p):
    """DICE (Sun & Li 2022): V = mean ID-train activation (per unit) times W; keep W where V > the p-th percentile
    of all K x D entries of V (numpy linear); score = energy of (M * W) h + b."""
    V = train.mean(0)[None, :] * W
    M = V > np.percentile(V, p)
    return M, _lse(test @ (W * M).T + b)


@pytest.mark.parametrize("p", [70.0, 90.0, 35.0])
def test_dice_masks_the_top_contributions_of_the_mean_activation(p):
    # K = 3, D = 28 -> 84 weights; D = 4 * width
    model, W, b = _head(3, 7, seed=5)
    rng = np.random.default_rng(5)
    train = _relu_features(rng, 40, 28) * rng.uniform(0.1, 5.0, size=(1, 28))   # unequal mean activations
    test = _relu_features(rng, 12, 28)
    M, want = _dice_oracle(train, W, b, test, p)
    dice = scorers.build_scorer("dice", percentile=p)
    dice.fit_features(_t(train), _t(train @ W.T + b), torch.zeros(40, dtype=torch.long), model)
    assert np.array_equal(dice.mask.cpu().numpy(), M)
    got = dice.score_features(_t(test), _t(test @ W.T + b), model).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the mean activation matters: the mask of W alone (equal means) is another one
    assert not np.array_equal(W > np.percentile(W, p), M)


def test_dice_threshold_is_strict_at_an_exact_order_statistic():
    """K * D = 21 weights, p = 70: np.percentile sits exactly on an entry (position 0.7 * 20 = 14), so the strict
    ``>`` keeps 6 weights, not 7."""
    torch.manual_seed(0)
    model = SmallNet(3, width=1).double().eval()             # D = 4 -> K * D = 12; replace the head for D = 7
    model.fc = torch.nn.Linear(7, 3).double()
    rng = np.random.default_rng(6)
    W, b = rng.normal(size=(3, 7)), rng.normal(size=3)
    with torch.no_grad():
        model.fc.weight.copy_(_t(W))
        model.fc.bias.copy_(_t(b))
    train = rng.uniform(0.5, 2.0, size=(10, 7))
    M, want = _dice_oracle(train, W, b, train[:4], 70.0)
    assert M.sum() == 6
    dice = scorers.build_scorer("dice", percentile=70.0)
    dice.fit_features(_t(train), _t(train @ W.T + b), torch.zeros(10, dtype=torch.long), model)
    assert int(dice.mask.sum()) == 6 and np.array_equal(dice.mask.numpy(), M)
    np.testing.assert_allclose(dice.score_features(_t(train[:4]), None, model).double().numpy(), want, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Mahalanobis
# ---------------------------------------------------------------------------------------------------------------

def test_mahalanobis_pooled_covariance_with_unbalanced_classes_and_sparse_labels():
    """Class means and the pooled within-class covariance (1/N) of ID-train; score max_c -(h - mu_c)^T S^-1 (h -
    mu_c). Unbalanced classes (8, 20, 45 samples) with different covariances: the pooled estimate differs from the
    mean of the per-class covariances and from the covariance around the global mean. Labels 1, 4, 6 (not 0..K-1)."""
    rng = np.random.default_rng(8)
    d = 3
    centers = {1: np.array([0.0, 0.0, 0.0]), 4: np.array([4.0, -2.0, 1.0]), 6: np.array([-3.0, 3.0, 2.0])}
    sizes = {1: 8, 4: 20, 6: 45}
    parts, labels = [], []
    for c, n in sizes.items():
        A = rng.normal(size=(d, d)) * (0.5 + c / 6)
        parts.append(centers[c] + rng.normal(size=(n, d)) @ A)
        labels += [c] * n
    train, y = np.vstack(parts), np.array(labels)
    mus = {c: train[y == c].mean(0) for c in sizes}
    resid = train - np.stack([mus[c] for c in y])
    S = resid.T @ resid / len(train)
    P = np.linalg.inv(S)
    test = np.vstack([rng.normal(size=(6, d)) * 2 + centers[c] for c in sizes] + [rng.normal(size=(4, d)) * 8])
    want = np.array([max(-(h - mus[c]) @ P @ (h - mus[c]) for c in sizes) for h in test])

    # discriminating case: the other covariance estimates give other scores
    S_avg = np.mean([np.cov(train[y == c].T, bias=True) for c in sizes], axis=0)
    S_glob = np.cov(train.T, bias=True)
    for other in (S_avg, S_glob, S * len(train) / (len(train) - 1)):
        alt = np.array([max(-(h - mus[c]) @ np.linalg.inv(other) @ (h - mus[c]) for c in sizes) for h in test])
        assert np.abs(alt - want).max() > 1e-3 * np.abs(want).max()

    model = SmallNet(7, width=1).double().eval()              # K = 7 (labels up to 6); only fc's shape matters here
    maha = scorers.build_scorer("mahalanobis")
    maha.fit_features(_t(train), torch.zeros(len(train), 7, dtype=torch.float64), torch.from_numpy(y), model)
    got = maha.score_features(_t(test), None, model).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert got[:18].mean() > got[18:].mean()                  # near the class means scores higher than far away
