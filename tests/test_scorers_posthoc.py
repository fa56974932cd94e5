"""The six newer post-hoc scorers (GEN, SCALE, fDBD, RMD, NNGuide, NECO) against oracles written here.

Each scorer is called through its public interface (``build_scorer``, ``fit_features``, ``score_features``) and
compared with

* a from-first-principles numpy reimplementation in this file (small hand-made features and head weights; loops over
  samples and classes where that reads closest to the paper's formula), and
* a second, independent implementation: pytorch-ood 0.4 (a test dependency) where it has the method (GEN, SCALE,
  fDBD, RMD, NNGuide), and for NECO, which pytorch-ood 0.4 lacks, the official code's pipeline rebuilt from the same
  scikit-learn calls (``StandardScaler`` then ``PCA``).

pytorch-ood returns outlier scores (higher = more OOD) and departs from the papers in a few places; the paper wins,
and each test says where the two differ (GEN: a mean instead of the sum and probabilities clamped to
[1e-7, 1 - 1e-7]; RMD: scatter matrices not divided by N; SCALE: its default percentile 0.65 instead of the code's
85). Each oracle is shown to discriminate: a plausible wrong variant gives other values on the same data.
"""
import math

import numpy as np
import pytest
import torch
from pytorch_ood.detector import GEN as OodGEN, RMD as OodRMD, EnergyBased, NNGuide as OodNNGuide, fDBD as OodFDBD
from pytorch_ood.detector.scale import scale as ood_scale
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from torch import nn

from ood import scorers
from ood.metrics import auroc
from ood.models import SmallNet

NEW = ["gen", "scale", "fdbd", "rmd", "nnguide", "neco"]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _lse(z):
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _head(W, b):
    """A float64 SmallNet whose linear head is (W, b): D = 4 * width must equal W.shape[1]."""
    k, d = W.shape
    assert d % 4 == 0
    model = SmallNet(k, width=d // 4).double().eval()
    with torch.no_grad():
        model.fc.weight.copy_(_t(W))
        model.fc.bias.copy_(_t(b))
    return model


def _linear(W, b):
    lin = nn.Linear(W.shape[1], W.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(_t(W))
        lin.bias.copy_(_t(b))
    return lin


def _fit(scorer, model, h, y=None):
    h = _t(h)
    logits = model.head(h).detach()
    labels = logits.argmax(1) if y is None else _t(y)
    return scorer.fit_features(h, logits, labels, model)


def _score(scorer, model, h):
    h = _t(h)
    return scorer.score_features(h, model.head(h).detach(), model).double().numpy()


def _clusters(rng, k, d, n_per, spread=0.4, scale=3.0):
    """Non-negative class clusters: class c concentrates on its own block of units (a neural-collapse-like toy)."""
    centers = np.abs(rng.normal(size=(k, d))) * 0.3
    for c in range(k):
        centers[c, c * (d // k):(c + 1) * (d // k)] += scale
    y = np.repeat(np.arange(k), n_per)
    h = np.abs(centers[y] + spread * rng.normal(size=(len(y), d)))
    return h, y, centers


# ---------------------------------------------------------------------------------------------------------------
# GEN
# ---------------------------------------------------------------------------------------------------------------

def _gen_oracle(logits, gamma, M):
    """-sum over the M largest probabilities of p^gamma (1 - p)^gamma, one sample at a time (paper, Sec. 3)."""
    out = []
    for row in _softmax(logits):
        top = sorted(row, reverse=True)[:min(M, len(row))]
        out.append(-sum(p ** gamma * (1 - p) ** gamma for p in top))
    return np.array(out)


@pytest.mark.parametrize("gamma,M", [(0.1, 100), (0.1, 3), (0.5, 5), (2.0, 1)])
def test_gen_matches_the_paper_formula(gamma, M):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(9, 8)) * 3
    logits[0] = [12.0, 0, 0, 0, 0, 0, 0, 0]                  # confident: entropy near 0, the highest score
    logits[1] = 0.0                                          # uniform
    got = scorers.build_scorer("gen", gamma=gamma, M=M).score_features(None, _t(logits), None).double().numpy()
    want = _gen_oracle(logits, gamma, M)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    if M < 8:   # the top-M restriction matters: the bottom-M or all classes give other values
        assert np.abs(_gen_oracle(-logits, gamma, M) - want).max() > 1e-3
        assert np.abs(_gen_oracle(logits, gamma, 8) - want).max() > 1e-3
    assert got[0] == got.max()                               # confident = most ID
    assert scorers.gen(_t(logits), gamma, M).dtype == torch.float64


def test_gen_tiny_probabilities_count_and_m_is_capped_at_k():
    # with gamma = 0.1 a probability of e^-60 (about 1e-26) still contributes about 2.5e-3 per class
    logits = np.array([[60.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, -0.5]])
    got = scorers.build_scorer("gen").score_features(None, _t(logits), None).double().numpy()
    np.testing.assert_allclose(got, _gen_oracle(logits, 0.1, 4), rtol=1e-12)
    assert got[0] < -3 * math.exp(-6.0) * 0.99               # three terms of (e^-60)^0.1 = e^-6 each
    # M = 100 > K = 4: every class enters, exactly as M = K
    lg = _t(logits)
    assert torch.equal(scorers.gen(lg, 0.1, 100), scorers.gen(lg, 0.1, 4))


@pytest.mark.parametrize("M", [None, 3])
def test_gen_against_pytorch_ood(M):
    """pytorch-ood's GEN averages the top-M terms (the paper sums: a factor 1/M'), negates nothing (it is an outlier
    score) and clamps p to [1e-7, 1 - 1e-7]; its default M is None (all classes; the paper and code: 100). Where no
    probability is clamped, ours = -M' * theirs."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20, 6)) * 1.5                  # every p well inside [1e-7, 1 - 1e-7]
    k_used = 6 if M is None else M
    ours = scorers.build_scorer("gen", gamma=0.1, M=100 if M is None else M).score_features(None, _t(logits), None)
    theirs = OodGEN.score(_t(logits), gamma=0.1, M=M)
    np.testing.assert_allclose(ours.numpy(), -k_used * theirs.numpy(), rtol=1e-10)


def test_gen_departs_from_pytorch_ood_where_it_clamps():
    """A probability below 1e-7 is raised to 1e-7 by pytorch-ood before the power 0.1: (1e-7)^0.1 = 0.2 instead of
    (e^-40)^0.1 = 0.018. The paper's formula has no clamp; ours follows the paper (the numpy oracle)."""
    logits = np.array([[40.0, 0.0, 0.0]])
    ours = scorers.build_scorer("gen").score_features(None, _t(logits), None).double().numpy()
    theirs = -3 * OodGEN.score(_t(logits), gamma=0.1, M=None).double().numpy()
    np.testing.assert_allclose(ours, _gen_oracle(logits, 0.1, 3), rtol=1e-12)
    assert abs(theirs[0] - ours[0]) > 0.3


# ---------------------------------------------------------------------------------------------------------------
# SCALE
# ---------------------------------------------------------------------------------------------------------------

def _scale_oracle(H, W, b, p):
    """Energy of W (h * exp(s1 / s2)) + b, s2 the sum of the k = D - round(D p / 100) largest entries (np.round, as
    the SCALE code), per sample."""
    out = []
    d = H.shape[1]
    k = d - int(np.round(d * p / 100.0))
    for h in H:
        s1, s2 = h.sum(), np.sort(h)[::-1][:k].sum()
        f = W @ (h * np.exp(s1 / s2)) + b
        out.append(_lse(f[None])[0])
    return np.array(out)


@pytest.mark.parametrize("p", [85.0, 60.0, 0.0])
def test_scale_matches_its_definition(p):
    rng = np.random.default_rng(2)
    d, k = 20, 4
    H = np.abs(rng.normal(size=(10, d))) * rng.uniform(0.2, 2.0, size=(10, 1))   # post-ReLU-like, distinct values
    W, b = rng.normal(size=(k, d)) * 0.3, rng.normal(size=k)
    model = _head(W, b)
    got = _score(scorers.build_scorer("scale", percentile=p), model, H)
    want = _scale_oracle(H, W, b, p)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # scaling, not pruning: ASH-S (pruned, then scaled) and plain energy give other values
    ash = _score(scorers.build_scorer("ash_s", percentile=max(p, 10.0)), model, H)
    plain = _lse(H @ W.T + b)
    assert np.abs(ash - want).max() > 1e-3 and np.abs(plain - want).max() > 1e-3


def test_scale_against_pytorch_ood():
    """pytorch-ood's ``scale`` takes the percentile as a fraction (its default 0.65; the SCALE code's 85 here) on a
    (B, C, H, W) map; with H = W = 1 it is the penultimate vector. Its EnergyBased.score is -logsumexp."""
    rng = np.random.default_rng(3)
    H = np.abs(rng.normal(size=(16, 24)))
    W, b = rng.normal(size=(5, 24)) * 0.3, rng.normal(size=5)
    ours = _score(scorers.build_scorer("scale"), _head(W, b), H)
    scaled = ood_scale(_t(H)[:, :, None, None], 0.85)[:, :, 0, 0]
    theirs = EnergyBased.score(_linear(W, b)(scaled)).detach().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# fDBD
# ---------------------------------------------------------------------------------------------------------------

def _fdbd_oracle(H, W, b, mu):
    out = []
    for h in H:
        f = W @ h + b
        c_hat = int(np.argmax(f))
        dists = [abs((W[c_hat] - W[c]) @ h + b[c_hat] - b[c]) / np.linalg.norm(W[c_hat] - W[c])
                 for c in range(len(b)) if c != c_hat]
        out.append(np.mean(dists) / np.linalg.norm(h - mu))
    return np.array(out)


def test_fdbd_hand_case():
    # K = 2, D = 4: boundary h_0 = 0 (w_0 - w_1 = (2, 0, 0, 0), b equal); h = (3, 5, 0, 0) is at distance 3 from it
    W = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    model = _head(W, np.zeros(2))
    train = np.array([[1.0, 1, 0, 0], [-1.0, -1, 0, 0]])      # mean 0
    fd = _fit(scorers.build_scorer("fdbd"), model, train)
    assert _score(fd, model, np.array([[3.0, 5, 0, 0]]))[0] == pytest.approx(3 / math.sqrt(34), rel=1e-6)


def test_fdbd_matches_the_paper_formula():
    rng = np.random.default_rng(4)
    k, d = 5, 12
    W, b = rng.normal(size=(k, d)), rng.normal(size=k)
    train = rng.normal(size=(60, d)) + 1.5                    # a training mean far from 0
    test = rng.normal(size=(15, d)) * 2
    model = _head(W, b)
    fd = _fit(scorers.build_scorer("fdbd"), model, train)
    got = _score(fd, model, test)
    mu = train.mean(0)
    want = _fdbd_oracle(test, W, b, mu)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # discriminating: the feature norm instead of the distance to the training mean (OpenOOD's other option), or the
    # code's sum instead of the paper's mean scaled wrongly, differ
    assert np.abs(_fdbd_oracle(test, W, b, np.zeros(d)) - want).max() > 1e-3
    assert np.abs(_fdbd_oracle(test, W, np.zeros(k), mu) - want).max() > 1e-3   # the bias is part of the distance

    # pytorch-ood: the same mean over the K - 1 classes and the same normalizer, negated (outlier score), float32
    det = OodFDBD(encoder=None, head=_linear(W, b).float()).fit_features(_t(train).float())
    theirs = det.predict_features(_t(test).float()).double().numpy()
    np.testing.assert_allclose(got, -theirs, rtol=1e-5)


def test_fdbd_rejects_heads_without_boundaries():
    h = np.ones((4, 4))
    with pytest.raises(ValueError, match="classes 0 and 2 have identical weight vectors"):
        _fit(scorers.build_scorer("fdbd"), _head(np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0]]),
                                                 np.zeros(3)), h)
    with pytest.raises(ValueError, match="at least two classes"):
        _fit(scorers.build_scorer("fdbd"), _head(np.ones((1, 4)), np.zeros(1)), h)


# ---------------------------------------------------------------------------------------------------------------
# RMD
# ---------------------------------------------------------------------------------------------------------------

def _gauss_fit(H, y):
    classes = sorted(set(y.tolist()))
    mus = {c: H[y == c].mean(0) for c in classes}
    resid = np.vstack([H[y == c] - mus[c] for c in classes])
    S = resid.T @ resid / len(H)
    mu0 = H.mean(0)
    S0 = (H - mu0).T @ (H - mu0) / len(H)
    return mus, np.linalg.inv(S), mu0, np.linalg.inv(S0)


def _rmd_oracle(test, mus, P, mu0, P0):
    return np.array([(h - mu0) @ P0 @ (h - mu0) - min((h - m) @ P @ (h - m) for m in mus.values()) for h in test])


def test_rmd_matches_the_paper_formula():
    rng = np.random.default_rng(5)
    d = 8
    sizes = {0: 40, 3: 15, 5: 25}                            # unbalanced, non-contiguous labels
    centers = {c: rng.normal(size=d) * 3 for c in sizes}
    A = rng.normal(size=(d, d)) * 0.5                        # a correlated shared noise
    y = np.concatenate([[c] * n for c, n in sizes.items()])
    train = np.vstack([rng.normal(size=(n, d)) @ A + centers[c] for c, n in sizes.items()])
    test = np.vstack([rng.normal(size=(6, d)) @ A + centers[c] for c in sizes] + [rng.normal(size=(6, d)) * 6])
    model = _head(rng.normal(size=(6, d)), np.zeros(6))      # only fc's shape matters
    rmd = _fit(scorers.build_scorer("rmd"), model, train, y)
    got = rmd.score_features(_t(test), None, model).double().numpy()
    mus, P, mu0, P0 = _gauss_fit(train, y)
    want = _rmd_oracle(test, mus, P, mu0, P0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    # discriminating: without the background term it is Mahalanobis; a class covariance in MD_0 differs too
    maha = scorers.build_scorer("mahalanobis")
    maha.fit_features(_t(train), None, _t(y), model)
    assert np.abs(maha.score_features(_t(test), None, model).double().numpy() - want).max() > 1e-3
    assert np.abs(_rmd_oracle(test, mus, P, mu0, P) - want).max() > 1e-3


def test_rmd_against_pytorch_ood():
    """pytorch-ood's RMD uses the same class means, tied covariance and background Gaussian, but sums the outer
    products without dividing by N (a 1/N factor on both distances; plus a 1e-6 ridge) and returns the outlier score
    min_k (MD_k - MD_0). So ours = -N * theirs, up to the ridge and its float32 arithmetic. It needs contiguous
    labels 0..C-1."""
    rng = np.random.default_rng(6)
    d, n = 8, 90
    y = np.repeat(np.arange(3), n // 3)
    train = rng.normal(size=(n, d)) + rng.normal(size=(3, d))[y] * 3
    test = np.vstack([rng.normal(size=(10, d)) + train[:3].mean(0), rng.normal(size=(5, d)) * 5])
    model = _head(rng.normal(size=(3, d)), np.zeros(3))
    ours = _fit(scorers.build_scorer("rmd"), model, train, y).score_features(_t(test), None, model).double().numpy()
    det = OodRMD(encoder=None).fit_features(_t(train).float(), _t(y))
    theirs = det.predict_features(_t(test).float()).double().numpy()
    np.testing.assert_allclose(ours, -n * theirs, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# NNGuide
# ---------------------------------------------------------------------------------------------------------------

def _nnguide_oracle(bank_h, bank_logits, test_h, test_logits, k):
    """Energy(x) times the mean of the k largest <h/|h|, E_i h_i/|h_i|> over the bank (the code: IndexFlatIP)."""
    bank = bank_h / np.linalg.norm(bank_h, axis=1, keepdims=True) * _lse(bank_logits)[:, None]
    out = []
    for h, e in zip(test_h, _lse(test_logits)):
        sims = np.sort(bank @ (h / np.linalg.norm(h)))[::-1]
        out.append(sims[:k].mean() * e)
    return np.array(out)


@pytest.mark.parametrize("k", [10, 3])
def test_nnguide_matches_its_definition_with_the_whole_bank(k):
    rng = np.random.default_rng(7)
    d = 8
    W, b = rng.normal(size=(3, d)), rng.normal(size=3) + 2.0
    train = np.abs(rng.normal(size=(40, d))) * rng.uniform(0.3, 3.0, size=(40, 1))   # energies vary a lot
    test = np.abs(rng.normal(size=(12, d))) * 1.5
    model = _head(W, b)
    nng = _fit(scorers.build_scorer("nnguide", k=k, bank_ratio=1.0), model, train)
    got = _score(nng, model, test)
    want = _nnguide_oracle(train, train @ W.T + b, test, test @ W.T + b, k)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # discriminating: an unscaled bank (plain cosine) or neighbours chosen by cosine before scaling differ
    cos = _nnguide_oracle(train, np.zeros((40, 3)), test, test @ W.T + b, k)     # every bank energy log 3
    assert np.abs(cos / np.abs(cos).mean() - want / np.abs(want).mean()).max() > 1e-3
    bank_n = train / np.linalg.norm(train, axis=1, keepdims=True)
    by_cos = np.array([(bank_n @ (h / np.linalg.norm(h)) * _lse(train @ W.T + b))[np.argsort(-(bank_n @ h))[:k]].mean()
                       * e for h, e in zip(test, _lse(test @ W.T + b))])
    assert np.abs(by_cos - want).max() > 1e-6

    # pytorch-ood: the same bank (given whole), the same top-k of the scaled inner products, negated
    det = OodNNGuide(encoder=None, head=_linear(W, b).float(), k=k)
    det.fit_features(_t(train).float(), torch.zeros(40, dtype=torch.long))            # it works in float32
    np.testing.assert_allclose(got, -det.predict_features(_t(test).float()).double().numpy(), rtol=1e-5)


def test_nnguide_bank_is_a_seeded_subset_of_id_train():
    rng = np.random.default_rng(8)
    d, n = 8, 1000
    W, b = rng.normal(size=(3, d)), rng.normal(size=3)
    train = np.abs(rng.normal(size=(n, d)))
    test = np.abs(rng.normal(size=(7, d)))
    model = _head(W, b)
    a = _fit(scorers.build_scorer("nnguide"), model, train)             # defaults: k 10, 1 % of ID-train, seed 0
    idx = a.bank_index.numpy()
    assert len(idx) == 10 and len(set(idx)) == 10 and idx.min() >= 0 and idx.max() < n   # max(k, floor(0.01 N))
    assert np.array_equal(idx, torch.randperm(n, generator=torch.Generator().manual_seed(0))[:10].sort().values)
    got = _score(a, model, test)
    np.testing.assert_allclose(got, _nnguide_oracle(train[idx], train[idx] @ W.T + b, test, test @ W.T + b, 10),
                               rtol=1e-6)
    b2 = _fit(scorers.build_scorer("nnguide"), model, train)
    assert np.array_equal(_score(b2, model, test), got)                   # deterministic
    c = _fit(scorers.build_scorer("nnguide", seed=1), model, train)
    assert not np.array_equal(c.bank_index.numpy(), idx)                  # the seed picks the subset
    big = _fit(scorers.build_scorer("nnguide", bank_ratio=0.05), model, train)
    assert len(big.bank_index) == 50
    small = _fit(scorers.build_scorer("nnguide"), model, train[:300])    # 1 % is 3 < k: the bank keeps k = 10
    assert len(small.bank_index) == 10
    with pytest.raises(ValueError, match="invalid value 10 for parameter 'k' of scorer 'nnguide': only 5"):
        _fit(scorers.build_scorer("nnguide"), model, train[:5])


# ---------------------------------------------------------------------------------------------------------------
# NECO
# ---------------------------------------------------------------------------------------------------------------

def _neco_oracle(train, test, d, standardize=True):
    """Standardize (ddof 0) with ID-train statistics, principal directions from an SVD of the centred standardized
    ID-train matrix, ||first d coordinates|| / ||standardized feature||."""
    if standardize:
        m, s = train.mean(0), train.std(0)
        train, test = (train - m) / s, (test - m) / s
    c = train.mean(0)
    _, _, vt = np.linalg.svd(train - c, full_matrices=False)
    return np.linalg.norm((test - c) @ vt[:d].T, axis=1) / np.linalg.norm(test, axis=1)


def _neco_data(rng, n, d):
    spectrum = np.linspace(3.0, 0.2, d)                       # distinct variances: the top-d subspace is unique
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mean = np.abs(rng.normal(size=d)) * 2
    return (rng.normal(size=(n, d)) * spectrum) @ Q.T + mean, Q, mean


@pytest.mark.parametrize("dim", [3, 5])
def test_neco_matches_its_definition_and_the_official_pipeline(dim):
    rng = np.random.default_rng(9)
    d = 12
    train, _, _ = _neco_data(rng, 200, d)
    test = np.vstack([_neco_data(rng, 10, d)[0], rng.normal(size=(5, d)) * 3])
    W, b = rng.normal(size=(4, d)), rng.normal(size=4)
    model = _head(W, b)
    neco = _fit(scorers.build_scorer("neco", dim=dim), model, train)
    got = _score(neco, model, test)
    want = _neco_oracle(train, test, dim)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the official code's calls: StandardScaler, PCA(D) fitted on the scaled ID-train, norm(reduced[:, :d]) / norm
    ss = StandardScaler()
    pca = PCA(d).fit(ss.fit_transform(train))
    scaled = ss.transform(test)
    np.testing.assert_allclose(got, np.linalg.norm(pca.transform(scaled)[:, :dim], axis=1)
                               / np.linalg.norm(scaled, axis=1), rtol=1e-6)
    # discriminating: one principal direction more or less, or no standardization, give other values
    for other in (_neco_oracle(train, test, dim + 1), _neco_oracle(train, test, dim - 1),
                  _neco_oracle(train, test, dim, standardize=False)):
        assert np.abs(other - want).max() > 1e-3
    # the max-logit form (the code's transformer branch) and the unstandardized one
    ml = _score(_fit(scorers.build_scorer("neco", dim=dim, maxlogit=True), model, train), model, test)
    np.testing.assert_allclose(ml, want * (test @ W.T + b).max(1), rtol=1e-6)
    raw = _score(_fit(scorers.build_scorer("neco", dim=dim, standardize=False), model, train), model, test)
    np.testing.assert_allclose(raw, _neco_oracle(train, test, dim, standardize=False), rtol=1e-6)


def test_neco_default_dim_and_its_limits():
    assert [scorers.NECO.default_dim(x) for x in (12, 128, 200, 342, 512, 2048)] == [6, 64, 100, 100, 100, 100]
    rng = np.random.default_rng(10)
    train, _, _ = _neco_data(rng, 100, 12)
    model = _head(rng.normal(size=(3, 12)), np.zeros(3))
    neco = _fit(scorers.build_scorer("neco"), model, train)
    assert neco.principal_dim == 6
    np.testing.assert_allclose(_score(neco, model, train[:5]), _neco_oracle(train, train[:5], 6), rtol=1e-6)
    with pytest.raises(ValueError, match="invalid value 12 for parameter 'dim' of scorer 'neco'.*1 <= dim < 12"):
        _fit(scorers.build_scorer("neco", dim=12), model, train)
    # a constant unit (zero variance) is left unscaled, as sklearn's StandardScaler does
    train[:, 4] = 2.5
    neco = _fit(scorers.build_scorer("neco", dim=4), model, train)
    ss = StandardScaler()
    pca = PCA(12).fit(ss.fit_transform(train))
    scaled = ss.transform(train[:6] + 0.5)
    np.testing.assert_allclose(_score(neco, model, train[:6] + 0.5),
                               np.linalg.norm(pca.transform(scaled)[:, :4], axis=1) / np.linalg.norm(scaled, axis=1),
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the contract: sign, parameters, determinism, per-sample scores
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    """Three non-negative ID class clusters (each strong on its own block of 4 of the 12 units), a head aligned with
    the class means (fc = normalized means), ID test points from the same clusters, and OOD points that are weak
    everywhere except two peaks in two different class blocks (mixed evidence, few active units). Peaky rather than
    flat on purpose: SCALE (like ASH-S) scales a flat activation pattern up, i.e. reads it as ID."""
    rng = np.random.default_rng(11)
    k, d = 3, 12
    train, y, centers = _clusters(rng, k, d, 100)
    W = centers / np.linalg.norm(centers, axis=1, keepdims=True) * 2
    x_id, _, _ = _clusters(np.random.default_rng(12), k, d, 30)
    x_ood = np.abs(rng.normal(size=(90, d))) * 0.05
    for i in range(len(x_ood)):
        a, c = rng.choice(k, 2, replace=False)
        x_ood[i, a * 4 + rng.integers(4)] += 1.5
        x_ood[i, c * 4 + rng.integers(4)] += 1.5
    return _head(W, np.zeros(k)), train, y, x_id, x_ood


@pytest.mark.parametrize("name", NEW)
def test_higher_means_id_on_a_toy_case(toy, name):
    model, train, y, x_id, x_ood = toy
    sc = _fit(scorers.build_scorer(name), model, train, y)
    s_id, s_ood = _score(sc, model, x_id), _score(sc, model, x_ood)
    assert np.isfinite(s_id).all() and np.isfinite(s_ood).all()
    assert s_id.mean() > s_ood.mean()
    assert auroc(torch.from_numpy(s_id), torch.from_numpy(s_ood)) > 90.0, name


@pytest.mark.parametrize("name", NEW)
def test_fitted_on_id_train_deterministic_and_per_sample(toy, name):
    model, train, y, x_id, x_ood = toy
    a = _fit(scorers.build_scorer(name), model, train, y)
    b = _fit(scorers.build_scorer(name), model, train, y)
    test = np.vstack([x_id, x_ood])
    s = _score(a, model, test)
    assert np.array_equal(s, _score(b, model, test))                     # same bits on a refit
    np.testing.assert_allclose(_score(a, model, test[7:19]), s[7:19], rtol=1e-6)   # one sample's score alone
    assert a.needs_fit == (name not in ("gen", "scale")) and not a.needs_network


def test_registry_defaults_and_parameter_checks():
    assert set(NEW) <= set(scorers.SCORERS) and set(NEW) <= set(scorers.DEFAULTS)
    assert scorers.DEFAULTS["gen"] == {"gamma": 0.1, "M": 100}
    assert scorers.DEFAULTS["scale"] == {"percentile": 85.0}
    assert scorers.DEFAULTS["fdbd"] == {} and scorers.DEFAULTS["rmd"] == {}
    assert scorers.DEFAULTS["nnguide"] == {"k": 10, "bank_ratio": 0.01, "seed": 0}
    assert scorers.DEFAULTS["neco"] == {"dim": None, "standardize": True, "maxlogit": False}
    for name in NEW:
        sc = scorers.build_scorer(name)
        assert sc.name == name and sc.params == scorers.DEFAULTS[name]
        assert scorers.SCORERS[name]().params == scorers.DEFAULTS[name]     # the class defaults are the same
    for name, params in [("gen", {"gamma": 0}), ("gen", {"M": 0}), ("gen", {"M": 2.5}), ("scale", {"percentile": 100}),
                         ("scale", {"percentile": -1}), ("nnguide", {"k": 0}), ("nnguide", {"bank_ratio": 0}),
                         ("nnguide", {"bank_ratio": 1.5}), ("nnguide", {"seed": -1}), ("neco", {"dim": 0}),
                         ("neco", {"standardize": 1}), ("neco", {"maxlogit": "yes"})]:
        with pytest.raises(ValueError, match=f"invalid value .* for parameter '{next(iter(params))}' of scorer"):
            scorers.build_scorer(name, **params)
    with pytest.raises(ValueError, match="unknown parameter 'd' for scorer 'neco'; allowed: dim, standardize"):
        scorers.build_scorer("neco", d=3)
    for name in ("fdbd", "rmd", "nnguide", "neco"):
        with pytest.raises(RuntimeError, match="not fitted"):
            scorers.build_scorer(name).score_features(torch.ones(2, 4), torch.ones(2, 3), None)
