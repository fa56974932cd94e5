"""Independent oracles: each expected value is recomputed here from the published formula, with numpy,
scikit-learn or plain torch only - no helper of ``ood`` computes an expected value.

* ViM (Wang et al., CVPR 2022) on features with a dense (non-diagonal) covariance;
* ASH-B (Djurisic et al., ICLR 2023) by hand, and where the paper's "percentile" wording and its code's top-k count
  part ways;
* the private ``_percentile`` helper against ``numpy.percentile`` (linear interpolation) on edge cases;
* FPR95: our rule (TPR >= 95 %) against the Energy-OE / OE code's ``fpr_and_fdr_at_recall`` (recall closest to
  95 %), where they differ and where they agree;
* one row of ``ood.evaluate.evaluate`` recomputed from the images.
"""
import copy

import numpy as np
import pytest
import torch

from ood import scorers
from ood.data import ArrayDataset
from ood.evaluate import evaluate
from ood.metrics import fpr_at_tpr
from ood.models import SmallNet


def _logsumexp(z: np.ndarray) -> np.ndarray:
    """log sum_c exp(z_c) per row, float64, shifted by the row max."""
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def _double_net(num_classes: int, width: int, seed: int) -> SmallNet:
    """A seeded SmallNet in float64; only its linear head ``fc`` (D = 4 * width -> num_classes) is used here."""
    torch.manual_seed(seed)
    return SmallNet(num_classes, width=width, depth=1).double().eval()


# ----------------------------------------------------------------------------------------------
# 1. ViM
# ----------------------------------------------------------------------------------------------

def _vim_oracle(train_h, train_logits, test_h, test_logits, W, b, dim):
    """ViM from the paper (Sec. 3-4, Eq. 5-9) with the covariance and eigenvectors as in its benchmark code.

    origin u = -pinv(W) b; covariance of the ID-train features centered at u (assume_centered: X^T X / N);
    principal space = the eigenvectors of the ``dim`` largest eigenvalues, P_perp = the others;
    vlogit = alpha * ||(h - u) P_perp||, alpha = sum_i max_c f_ic / sum_i ||(h_i - u) P_perp|| over ID-train.
    Returns (alpha, test residual norms, energy-form score lse(f) - vlogit, the paper's ViM probability
    softmax([f, vlogit])_virtual, which is high for OOD).
    """
    from sklearn.covariance import EmpiricalCovariance

    u = -np.linalg.pinv(W) @ b
    ec = EmpiricalCovariance(assume_centered=True).fit(train_h - u)
    evals, evecs = np.linalg.eigh(ec.covariance_)
    order = np.argsort(-evals)
    NS = evecs[:, order[dim:]]                                        # (D, D - dim) residual basis
    res_train = np.linalg.norm((train_h - u) @ NS, axis=1)
    alpha = train_logits.max(axis=1).sum() / res_train.sum()
    res = np.linalg.norm((test_h - u) @ NS, axis=1)
    vlogit = alpha * res
    score = _logsumexp(test_logits) - vlogit
    prob = np.exp(vlogit - _logsumexp(np.concatenate([test_logits, vlogit[:, None]], axis=1)))
    return alpha, res, score, prob, evals[order]


@pytest.mark.parametrize("dim", [None, 3])
def test_vim_matches_the_paper_on_correlated_features(dim):
    rng = np.random.default_rng(7)
    n_cls, width = 5, 3                                       # D = 12 features, K = 5 classes
    d = 4 * width
    model = _double_net(n_cls, width, seed=7)
    W, b = rng.normal(size=(n_cls, d)), rng.normal(size=n_cls)
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(W))
        model.fc.bias.copy_(torch.from_numpy(b))
    A = rng.normal(size=(d, d))                               # dense mixing: a non-diagonal covariance
    train_h = rng.normal(size=(300, d)) * np.linspace(3.0, 0.3, d) @ A + 1.0
    test_h = np.vstack([rng.normal(size=(30, d)) * np.linspace(3.0, 0.3, d) @ A + 1.0,
                        rng.normal(size=(30, d)) @ rng.normal(size=(d, d)) * 2.0])     # ID-like, then OOD-like
    train_logits, test_logits = train_h @ W.T + b, test_h @ W.T + b

    # D: our rule for a 12-dim feature (dim=None) is floor(12 / 2) = 6 [ours; the ViM code has only 512/1000]
    D = d // 2 if dim is None else dim
    alpha, res, expected, prob, evals = _vim_oracle(train_h, train_logits, test_h, test_logits, W, b, D)
    cov = np.cov((train_h - (-np.linalg.pinv(W) @ b)).T, bias=True)
    assert np.abs(cov - np.diag(np.diag(cov))).max() > 0.5 * np.abs(np.diag(cov)).min()   # really non-diagonal
    assert evals[D - 1] - evals[D] > 1e-6 * evals[0]          # the principal space is well defined

    vim = scorers.build_scorer("vim", dim=dim)
    vim.fit_features(torch.from_numpy(train_h), torch.from_numpy(train_logits), torch.zeros(300, dtype=torch.long),
                     model)
    assert vim.principal_dim == D
    assert vim.alpha == pytest.approx(alpha, rel=1e-10)
    np.testing.assert_allclose(vim.residual_norm(torch.from_numpy(test_h)).numpy(), res, rtol=1e-10, atol=1e-12)
    ours = vim.score_features(torch.from_numpy(test_h), torch.from_numpy(test_logits), model)
    # score_features returns float32 (computed in float64, cast at the end): compare at float32 precision
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=2e-7, atol=1e-6)
    # the paper's ViM probability (higher = OOD) is 1 / (1 + exp(our score)): the same ranking, opposite sign
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(ours.double().numpy())), prob, rtol=1e-5, atol=1e-12)
    assert expected[:30].mean() > expected[30:].mean()        # the case is not degenerate: ID-like score higher


# ----------------------------------------------------------------------------------------------
# 2. ASH-B
# ----------------------------------------------------------------------------------------------

def _ash_b_energy_percentile(h, W, b, p):
    """ASH-B as the paper words it: per sample, keep the activations above the p-th percentile of that sample's
    activations (numpy's linear percentile), set each kept one to s1 / K (s1 = the sample's sum before pruning,
    K = the number kept), zero the rest; then the energy score log sum exp(W a + b). Also returns K per row."""
    thr = np.percentile(h, p, axis=1, keepdims=True)
    keep = h > thr
    K = keep.sum(axis=1, keepdims=True)
    a = np.where(keep, h.sum(axis=1, keepdims=True) / K, 0.0)
    return _logsumexp(a @ W.T + b), K[:, 0]


def _ash_b_energy_topk(h, W, b, p):
    """ASH-B as the authors' code counts: keep the k = n - round(n p / 100) largest activations of each sample
    (rank by sorting here), each set to s1 / k, the rest 0; then the energy score."""
    n = h.shape[1]
    k = n - int(np.round(n * p / 100.0))
    rank = np.argsort(np.argsort(-h, axis=1, kind="stable"), axis=1)     # 0 = largest
    a = np.where(rank < k, h.sum(axis=1, keepdims=True) / k, 0.0)
    return _logsumexp(a @ W.T + b), k


def _ash_case(seed=3):
    model = _double_net(10, 8, seed=seed)                   # D = 32, the width-8 SmallNet head
    rng = np.random.default_rng(seed)
    h = rng.exponential(size=(64, 32)) * rng.uniform(0.2, 3.0, size=(1, 32))   # non-negative, no ties
    W = model.fc.weight.detach().numpy()
    b = model.fc.bias.detach().numpy()
    return model, h, W, b


def test_ash_b_matches_the_paper_by_hand_at_percentile_65():
    model, h, W, b = _ash_case()
    expected, K = _ash_b_energy_percentile(h, W, b, 65)
    # D = 32, p = 65: np.percentile sits at order position 0.65 * 31 = 20.15 -> the 11 values of ranks 21..31
    # (0-based, ascending) are above it; the code's count is 32 - round(20.8) = 11: both readings keep 11
    assert (K == 11).all()
    assert np.allclose(_ash_b_energy_topk(h, W, b, 65)[0], expected, rtol=1e-13)
    ours = scorers.build_scorer("ash_b", percentile=65).score_features(torch.from_numpy(h), None, model)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-12)
    # not vacuous: ASH-B differs from the plain energy score of the same features
    assert np.abs(_logsumexp(h @ W.T + b) - expected).min() > 1e-3


def test_ash_b_follows_the_codes_top_k_count_not_the_percentile_wording():
    """Where the two readings of "the p-th percentile" differ, ours keeps the code's k = n - round(n p / 100)."""
    model, h, W, b = _ash_case()
    # D = 32, p = 90: the paper's wording (values above np.percentile, order position 0.9 * 31 = 27.9) keeps the
    # 4 values of ranks 28..31; the code keeps k = 32 - round(28.8) = 3
    by_percentile, K = _ash_b_energy_percentile(h, W, b, 90)
    by_code, k = _ash_b_energy_topk(h, W, b, 90)
    assert (K == 4).all() and k == 3
    ours = scorers.build_scorer("ash_b", percentile=90).score_features(torch.from_numpy(h), None, model).numpy()
    np.testing.assert_allclose(ours, by_code, rtol=1e-12, atol=1e-12)
    assert np.abs(ours - by_percentile).max() > 1e-3
    # ties (a post-ReLU row with many exact zeros): the percentile reading keeps only the 2 positive values
    # (the 65th percentile is 0, nothing ties above it); the code - and ours - keep k = 32 - round(20.8) = 11
    # entries, 9 of them zeros chosen by torch.topk among equal values, each set to s1 / 11
    row = torch.zeros(1, 32, dtype=torch.float64)
    row[0, 5], row[0, 17] = 2.0, 9.0
    shaped = scorers.ash_b(row, 65)
    assert int((shaped != 0).sum()) == 11
    assert shaped.sum().item() == pytest.approx(11.0, rel=1e-12)       # s1 preserved
    assert np.count_nonzero(row.numpy() > np.percentile(row.numpy(), 65)) == 2


# ----------------------------------------------------------------------------------------------
# 3. the private percentile helper
# ----------------------------------------------------------------------------------------------

_RNG = np.random.default_rng(11)
_PCT_CASES = {
    "size1": np.array([3.25]),
    "size2": np.array([5.0, -1.0]),
    "odd7": _RNG.normal(size=7),
    "odd101": _RNG.normal(size=101) * 100,
    "ties7": np.array([2.0, 2.0, 1.0, 2.0, 0.0, 0.0, 2.0]),
    "ties_many": _RNG.integers(0, 4, size=63).astype(np.float64),
    "all_equal": np.full(9, -0.5),
    "matrix": _RNG.exponential(size=(6, 5)),              # a 2-D input: the percentile of all entries
}


@pytest.mark.parametrize("case", list(_PCT_CASES))
@pytest.mark.parametrize("q", [0.0, 100.0, 50.0, 12.5, 33.3, 65.0, 90.0, 99.9])
def test_private_percentile_equals_numpy_linear(case, q):
    x = _PCT_CASES[case]
    expected = float(np.percentile(x, q, method="linear"))
    got = scorers.percentile_of(torch.from_numpy(x), q)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    if q == 0.0:
        assert got == x.min()
    if q == 100.0:
        assert got == x.max()


def test_private_percentile_interpolates_between_order_statistics():
    # [0, 10, 20, 40]: position q/100 * 3; q = 50 -> 1.5 -> 15; q = 90 -> 2.7 -> 20 + 0.7 * 20 = 34
    x = torch.tensor([40.0, 0.0, 20.0, 10.0], dtype=torch.float64)
    assert scorers.percentile_of(x, 50) == pytest.approx(15.0, abs=1e-12)
    assert scorers.percentile_of(x, 90) == pytest.approx(34.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# 4. FPR95: TPR >= 95 % (ours) vs recall closest to 95 % (Energy-OE / OE code)
# ----------------------------------------------------------------------------------------------

def _fpr_energy_oe(id_scores, ood_scores, recall_level=0.95):
    """FPR (%) at the recall closest to ``recall_level``, as ``fpr_and_fdr_at_recall`` of the Energy-OE code
    (wetliu/energy_ood, utils/display_results.py; also the OE code), ID positive, higher = ID.

    All scores sorted in decreasing order; one ROC point per distinct score (the last index of each run of equal
    scores): tps = ID samples with score >= t, fps = the others. recall = tps / #ID. The points up to the first
    one with full recall are scanned from the lowest threshold upwards and the first minimum of
    |recall - recall_level| is taken - among the thresholds with the closest recall, the lowest (largest fps).
    (The code also appends a point (recall 1, fps 0) at the end of that scan; it never wins, since the first
    scanned point has recall 1 as well and argmin returns the first minimum.)
    """
    s = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    full = int(np.argmax(tps == tps[-1]))
    recall = (tps / tps[-1])[full::-1]
    fps = fps[full::-1]
    return 100.0 * fps[int(np.argmin(np.abs(recall - recall_level)))] / len(ood_scores)


def _fpr_direct(id_scores, ood_scores):
    """Our rule from its definition: m = ceil(0.95 n) (integer arithmetic), t = the m-th largest ID score,
    FPR = % of OOD scores >= t."""
    n = len(id_scores)
    m = (95 * n + 99) // 100
    t = np.sort(id_scores)[::-1][m - 1]
    return 100.0 * np.count_nonzero(np.asarray(ood_scores) >= t) / len(ood_scores)


def test_fpr95_rules_differ_under_ties():
    # (i) ID ties. ID = 1..47 and three 0's (n = 50), OOD = [-1, 0, 0.5, 30.5].
    #   ours: m = ceil(47.5) = 48 -> t = 0 (the 48th largest; the tie makes the TPR 50/50) -> OOD >= 0:
    #         0, 0.5, 30.5 -> 3/4 = 75 %.
    #   Energy-OE: the reachable recalls are k/50 for k <= 47, then 50/50; the closest to 0.95 is 47/50 = 0.94
    #         (0.01 away, vs 0.05 for 1.0), a TPR below 95 %. Thresholds with 47 ID: 1 (fps 1) and 0.5 (fps 2);
    #         the lowest is taken -> fps = 2 (0.5, 30.5) -> 2/4 = 50 %.
    s_id = np.r_[np.arange(1.0, 48.0), [0.0, 0.0, 0.0]]
    s_ood = np.array([-1.0, 0.0, 0.5, 30.5])
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(75.0, abs=1e-12)
    assert _fpr_direct(s_id, s_ood) == pytest.approx(75.0, abs=1e-12)
    assert _fpr_energy_oe(s_id, s_ood) == pytest.approx(50.0, abs=1e-12)
    # (ii) an ID/OOD tie at our threshold, small n. ID = 1..12, OOD = [0.5, 1, 2.5, 13].
    #   ours: m = ceil(11.4) = 12 -> t = 1 -> OOD >= 1: 1 (tie, accepted), 2.5, 13 -> 3/4 = 75 %.
    #   Energy-OE: closest recall 11/12 = 0.917 (0.033 away, vs 0.05 for 1.0), below 95 %; the lowest threshold
    #         with 11 ID is 2 (at 1 the 12th ID enters) -> fps = 2 (2.5, 13) -> 2/4 = 50 %.
    s_id = np.arange(1.0, 13.0)
    s_ood = np.array([0.5, 1.0, 2.5, 13.0])
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(75.0, abs=1e-12)
    assert _fpr_energy_oe(s_id, s_ood) == pytest.approx(50.0, abs=1e-12)
    # without the tie (OOD 1.0 -> 0.9) both rules give 2/4: ours t = 1 accepts 2.5, 13; Energy-OE as above
    s_ood = np.array([0.5, 0.9, 2.5, 13.0])
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(50.0, abs=1e-12)
    assert _fpr_energy_oe(s_id, s_ood) == pytest.approx(50.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_fpr95_rules_on_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    # (a) 0.95 n an integer (n = 200, m = 190): the closest recall is exactly 0.95 = ours. The rules then agree
    #     unless an OOD score falls strictly between the 191st and the 190th largest ID scores: the Energy-OE code
    #     takes the lowest threshold with 190 ID, which also accepts those (ours stops at the 190th ID score).
    s_id = rng.normal(1.0, 1.0, 200)
    s_ood = rng.normal(0.0, 1.0, 150)
    srt = np.sort(s_id)[::-1]
    lo, hi = srt[190], srt[189]                                # 191st and 190th largest
    in_gap = (s_ood > lo) & (s_ood < hi)
    clean = s_ood[~in_gap]
    assert fpr_at_tpr(s_id, clean) == pytest.approx(_fpr_energy_oe(s_id, clean), abs=1e-9)
    assert fpr_at_tpr(s_id, clean) == pytest.approx(_fpr_direct(s_id, clean), abs=1e-9)
    with_gap = np.r_[clean, [(lo + hi) / 2, (2 * lo + hi) / 3]]   # two OOD scores in the gap
    assert _fpr_energy_oe(s_id, with_gap) - fpr_at_tpr(s_id, with_gap) == pytest.approx(100 * 2 / with_gap.size,
                                                                                        abs=1e-9)
    # (b) 0.95 n = 126.35 (n = 133): ours needs m = 127 ID samples (TPR 95.5 %); the closest recall is 126/133 =
    #     94.7 %, but the lowest threshold with 126 ID accepts exactly the OOD scores > the 127th ID score, i.e.
    #     ours when nothing ties: the two agree although the Energy-OE recall is below 95 %.
    s_id = rng.normal(1.0, 1.0, 133)
    s_ood = rng.normal(0.0, 1.0, 150)
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(_fpr_energy_oe(s_id, s_ood), abs=1e-9)
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(_fpr_direct(s_id, s_ood), abs=1e-9)


# ----------------------------------------------------------------------------------------------
# 5. one row of evaluate() from scratch
# ----------------------------------------------------------------------------------------------

def _images(n, seed, low, high):
    """uint8 images: per image and channel a random level in [low, high], plus pixel noise (varied features)."""
    g = torch.Generator().manual_seed(seed)
    level = low + (high - low) * torch.rand(n, 3, 1, 1, generator=g)
    x = (level + 40 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 255).round().to(torch.uint8)
    return ArrayDataset(name=f"s{seed}", images=x, labels=torch.arange(n) % 3)


def _msp_oracle(model, ds):
    """Logits of ``model`` (float64 copy, eval mode, NCHW) on the uint8 images scaled to [0, 1]; max softmax."""
    x = ds.images.double() / 255.0
    with torch.no_grad():
        logits = model(x).numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).max(axis=1)


def _auroc_pairs(s_id, s_ood):
    """100 * (P(s_id > s_ood) + 0.5 P(s_id == s_ood)) over all pairs, counted."""
    gt = (s_id[:, None] > s_ood[None, :]).sum()
    eq = (s_id[:, None] == s_ood[None, :]).sum()
    return 100.0 * (gt + 0.5 * eq) / (s_id.size * s_ood.size)


def test_one_evaluate_row_recomputed_from_the_images():
    torch.manual_seed(6)
    model = SmallNet(3, width=8, depth=1)
    with torch.no_grad():
        model.fc.weight.mul_(20.0)                             # spread the logits: MSP values well apart
    reference = copy.deepcopy(model).double().eval()          # evaluate() moves the model to channels_last / eval
    id_train = _images(30, 0, 170, 255)                        # brighter: distinguishable from ID-test
    id_test = _images(40, 1, 0, 200)
    oods = {"near": _images(23, 2, 20, 220), "far": _images(37, 3, 0, 90)}
    res = evaluate(model, id_train=id_train, id_test=id_test, ood_sets=oods, scorers={"msp": {}},
                   benchmark="toy", method="m", progress=False)

    s_id = _msp_oracle(reference, id_test)
    s_train = _msp_oracle(reference, id_train)
    np.testing.assert_allclose(res.scores["msp/id"], s_id, rtol=0, atol=1e-6)
    rows = res.metrics.set_index("ood_set")
    for name, ds in oods.items():
        s_ood = _msp_oracle(reference, ds)
        np.testing.assert_allclose(res.scores[f"msp/{name}"], s_ood, rtol=0, atol=1e-6)
        # float32 (evaluate) vs float64 (here) cannot reorder or tie the scores: the smallest gap between two
        # scores (about 4.5e-5 here) is far above their difference (below 1e-7)
        both = np.sort(np.r_[s_id, s_ood])
        assert np.diff(both).min() > 1e-5
        fpr = _fpr_direct(s_id, s_ood)
        auc = _auroc_pairs(s_id, s_ood)
        assert rows.loc[name, "fpr95"] == pytest.approx(fpr, abs=1e-9)
        assert rows.loc[name, "auroc"] == pytest.approx(auc, abs=1e-9)
        # the check is sensitive to the ID set used: ID-train in place of ID-test gives other values
        assert abs(_fpr_direct(s_train, s_ood) - fpr) > 1.0
        assert abs(_auroc_pairs(s_train, s_ood) - auc) > 1.0
    avg = rows.loc["average"]
    assert avg["fpr95"] == pytest.approx(np.mean([rows.loc[k, "fpr95"] for k in oods]), abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# ood.metrics.fpr_at_closest_recall (the energy-readme protocol's FPR95) against the oracle above
# ---------------------------------------------------------------------------------------------------------------

def test_fpr_at_closest_recall_equals_the_energy_code_rule():
    from ood.metrics import fpr_at_closest_recall

    # the hand cases of test_fpr95_rules_differ_under_ties: Energy-OE 50 % in both
    assert fpr_at_closest_recall(np.r_[np.arange(1.0, 48.0), [0.0, 0.0, 0.0]], [-1.0, 0.0, 0.5, 30.5]) == 50.0
    assert fpr_at_closest_recall(np.arange(1.0, 13.0), [0.5, 1.0, 2.5, 13.0]) == 50.0
    rng = np.random.default_rng(7)
    for _ in range(300):  # random sizes, heavy ties (integer scores)
        sid = rng.integers(0, 12, rng.integers(1, 60)).astype(float)
        sood = rng.integers(-3, 10, rng.integers(1, 40)).astype(float)
        assert fpr_at_closest_recall(sid, sood) == pytest.approx(_fpr_energy_oe(sid, sood), abs=1e-12)


def test_energy_readme_protocol_draws_a_fifth_of_the_id_test_size_ten_times():
    """evaluate(protocol="energy-readme"): per OOD set, len(id_test) // 5 scores drawn 10 times, metrics averaged,
    FPR95 by the closest-recall rule; recomputed here from the score cache with the same draws."""
    from ood.data import ArrayDataset
    from ood.evaluate import evaluate
    from ood.metrics import aupr_in as _ain

    torch.manual_seed(0)
    model = SmallNet(3, width=8, depth=1)
    g = torch.Generator().manual_seed(1)
    ds = lambda n, lo, hi: ArrayDataset(name="x", images=torch.randint(lo, hi, (n, 3, 32, 32), generator=g,
                                                                       dtype=torch.uint8),
                                        labels=torch.randint(0, 3, (n,), generator=g), classes=("a", "b", "c"))
    id_test, ood_a, ood_b = ds(50, 0, 255), ds(30, 0, 128), ds(7, 100, 255)
    kw = dict(id_train=ds(20, 0, 255), id_test=id_test, ood_sets={"a": ood_a, "b": ood_b}, scorers={"msp": {}},
              benchmark="t", method="m", progress=False)
    res = evaluate(model, protocol="energy-readme", seed=3, **kw)
    sid = res.scores["msp/id"]
    for k, name in enumerate(["a", "b"]):
        sood = res.scores[f"msp/{name}"]
        n = min(len(sood), len(sid) // 5)       # 10 of the 30 images of "a"; all 7 of "b"
        rng = np.random.default_rng(3 * 1_000 + k)
        subs = [sood[rng.permutation(len(sood))[:n]] for _ in range(10)]
        row = res.metrics.query(f"ood_set == '{name}'").iloc[0]
        assert row.fpr95 == pytest.approx(np.mean([_fpr_energy_oe(sid, s) for s in subs]), abs=1e-9)
        assert row.aupr_in == pytest.approx(np.mean([_ain(sid, s) for s in subs]), abs=1e-9)
    full = evaluate(model, **kw)
    assert full.metrics.query("ood_set == 'b'").iloc[0].auroc == pytest.approx(
        res.metrics.query("ood_set == 'b'").iloc[0].auroc)  # all 7 images drawn each time: the same AUROC
    with pytest.raises(ValueError, match="allowed: greg-detect, energy-readme"):
        evaluate(model, protocol="openood", **kw)
