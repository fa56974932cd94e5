"""OOD metrics on hand-computed cases (higher score = more ID; FPR95 and AUPR-In with ID positive)."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ood import metrics
from ood.metrics import aupr_in, aupr_out, auroc, fpr_at_tpr, summarize, tpr_threshold


def test_perfect_separation():
    m = summarize([5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0])
    assert m["fpr95"] == 0.0
    assert m["auroc"] == pytest.approx(100.0)
    assert m["aupr_in"] == pytest.approx(100.0)
    assert m["aupr_out"] == pytest.approx(100.0)


def test_reversed_scores():
    m = summarize([1.0, 2.0, 3.0], [5.0, 6.0, 7.0, 8.0])
    assert m["fpr95"] == 100.0
    assert m["auroc"] == pytest.approx(0.0)


def test_all_ties():
    # every score equal: the threshold accepts everything (ties count as ID), so every OOD sample is a
    # false positive; AUROC 50 (ties count half); the PR curve has a single point with precision equal to
    # the positive base rate: AUPR-In = 3/5, AUPR-Out = 2/5.
    m = summarize(np.full(3, 0.3), np.full(2, 0.3))
    assert m["fpr95"] == 100.0
    assert m["auroc"] == pytest.approx(50.0)
    assert m["aupr_in"] == pytest.approx(60.0)
    assert m["aupr_out"] == pytest.approx(40.0)


def test_three_vs_three_by_hand():
    # ID = [0.9, 0.6, 0.4], OOD = [0.7, 0.3, 0.2].
    # FPR95: ceil(0.95 * 3) = 3 ID samples must be accepted -> threshold 0.4; OOD >= 0.4: {0.7} -> 1/3.
    # AUROC: pairs (id > ood) out of 9: 0.9 beats 3, 0.6 beats 2, 0.4 beats 2 -> 7/9.
    # AUPR-In (ID positive, ranked by decreasing score): 0.9 I, 0.7 O, 0.6 I, 0.4 I, 0.3 O, 0.2 O;
    #   precision at each ID hit: 1/1, 2/3, 3/4 -> AP = (1 + 2/3 + 3/4) / 3 = 29/36.
    # AUPR-Out (OOD positive, ranked by increasing score): 0.2 O, 0.3 O, 0.4 I, 0.6 I, 0.7 O, 0.9 I;
    #   precision at each OOD hit: 1/1, 2/2, 3/5 -> AP = (1 + 1 + 3/5) / 3 = 13/15.
    s_id, s_ood = np.array([0.9, 0.6, 0.4]), np.array([0.7, 0.3, 0.2])
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(100 / 3)
    assert auroc(s_id, s_ood) == pytest.approx(700 / 9)
    assert aupr_in(s_id, s_ood) == pytest.approx(100 * 29 / 36)
    assert aupr_out(s_id, s_ood) == pytest.approx(100 * 13 / 15)


def test_size_imbalance_and_tie_at_threshold():
    # 20 ID scores 1..20, 3 OOD scores. ceil(0.95 * 20) = 19 -> threshold = 19th largest ID score = 2.
    # OOD accepted (>= 2): 2.0 (a tie, accepted) and 25 -> 2/3.
    # AUROC over 60 pairs: OOD 1.5 is beaten by 19 ID scores; OOD 2.0 by 18 plus one tie (0.5);
    # OOD 25 by none -> 37.5 / 60 = 62.5 %.
    s_id = np.arange(1, 21, dtype=float)
    s_ood = np.array([1.5, 2.0, 25.0])
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(200 / 3)
    assert auroc(s_id, s_ood) == pytest.approx(62.5)
    # the same with the sizes swapped the other way (many OOD, few ID): 2 ID -> ceil(1.9) = 2 -> threshold 3
    assert fpr_at_tpr([3.0, 10.0], np.arange(10, dtype=float)) == pytest.approx(70.0)  # OOD 3..9 accepted


def test_threshold_count_is_exact_at_integer_tpr_times_n():
    # 100 ID scores 0..99: exactly 95 must be accepted -> threshold 5 (0.95 * 100 must not round up to 96)
    s_id = np.arange(100, dtype=float)
    assert fpr_at_tpr(s_id, [4.5, 5.0]) == pytest.approx(50.0)
    assert fpr_at_tpr(s_id, [4.5, 5.0], tpr=0.5) == 0.0      # threshold 50
    # 0.55 * 100 = 55.00000000000001 in floating point: still 55 accepted -> threshold 45
    assert fpr_at_tpr(s_id, [44.5, 45.0], tpr=0.55) == pytest.approx(50.0)
    assert fpr_at_tpr(s_id, [4.5, 5.0], tpr=1.0) == 100.0    # threshold 0


@pytest.mark.parametrize("n_id", [20, 99, 100, 1000])
def test_tpr_threshold_is_the_fpr95_operating_point(n_id):
    rng = np.random.default_rng(n_id)
    sid, sood = rng.normal(1, 1, n_id), rng.normal(0, 1, 300)
    t = tpr_threshold(sid, 0.95)
    # by hand: the ceil(0.95 n)-th largest ID score keeps at least 95% of ID; FPR95 = % of OOD at or above it
    t_hand = np.sort(sid)[::-1][math.ceil(0.95 * n_id) - 1]
    assert t == t_hand and np.mean(sid >= t) >= 0.95
    assert fpr_at_tpr(sid, sood, 0.95) == pytest.approx(100 * np.count_nonzero(sood >= t_hand) / len(sood))
    assert tpr_threshold([3.0, 1.0, 2.0, 0.0], 0.5) == 2.0  # ceil(0.5 * 4) = 2nd largest


def test_aupr_in_and_out_are_not_swapped():
    # ID = [3, 1], OOD = [2, 0, -1, -2, -3, -4] (6 OOD, 2 ID).
    # AUPR-In: ranking 3 I, 2 O, 1 I, ... -> precision at the ID hits 1/1, 2/3 -> AP = (1 + 2/3) / 2 = 5/6.
    # AUPR-Out: ranking -4 O, -3 O, -2 O, -1 O, 0 O, 1 I, 2 O, 3 I -> precision at the OOD hits
    #   1, 1, 1, 1, 1, 6/7 -> AP = (5 + 6/7) / 6 = 41/42.
    s_id, s_ood = [3.0, 1.0], [2.0, 0.0, -1.0, -2.0, -3.0, -4.0]
    assert aupr_in(s_id, s_ood) == pytest.approx(100 * 5 / 6)
    assert aupr_out(s_id, s_ood) == pytest.approx(100 * 41 / 42)


def test_accepts_torch_tensors_and_lists():
    s_id, s_ood = torch.tensor([0.9, 0.6, 0.4]), torch.tensor([0.7, 0.3, 0.2], dtype=torch.float64)
    assert summarize(s_id, s_ood) == pytest.approx(summarize([0.9, 0.6, 0.4], [0.7, 0.3, 0.2]))
    assert list(summarize(s_id, s_ood)) == ["fpr95", "auroc", "aupr_in", "aupr_out", "fpr95_ood_pos"]


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [float("inf"), 1.0], [-float("inf")]])
def test_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="non-finite"):
        summarize(bad, [0.0])
    with pytest.raises(ValueError, match="ood_scores"):
        auroc([0.0], bad)


def test_rejects_empty_and_bad_shapes_and_tpr():
    with pytest.raises(ValueError, match="id_scores is empty"):
        fpr_at_tpr([], [1.0])
    with pytest.raises(ValueError, match="ood_scores is empty"):
        aupr_out([1.0], np.array([]))
    with pytest.raises(ValueError, match="1-D"):
        auroc(np.zeros((2, 2)), [1.0])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [0.0], tpr=0.0)
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr([1.0], [0.0], tpr=95)


@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_aupr_equal_scikit_learn_with_ties_and_imbalance(seed):
    """Our numpy AUROC/AUPR are scikit-learn's estimators (roc_auc_score, average_precision_score)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    n_id, n_ood = int(rng.integers(1, 400)), int(rng.integers(1, 400))
    levels = int(rng.integers(2, 30)) if seed % 2 else 10**6  # odd seeds: few distinct values, many ties
    s_id = rng.integers(0, levels, n_id) / 7 + 0.3
    s_ood = rng.integers(0, levels, n_ood) / 7
    y = np.r_[np.ones(n_id), np.zeros(n_ood)]
    s = np.r_[s_id, s_ood]
    assert metrics.auroc(s_id, s_ood) == pytest.approx(100 * roc_auc_score(y, s), abs=1e-9)
    assert metrics.aupr_in(s_id, s_ood) == pytest.approx(100 * average_precision_score(y, s), abs=1e-9)
    assert metrics.aupr_out(s_id, s_ood) == pytest.approx(100 * average_precision_score(1 - y, -s), abs=1e-9)


def test_scoring_and_plotting_do_not_import_scikit_learn():
    """scikit-learn and SciPy cost about 1.5 s of import in every evaluate stage; only the tests use them."""
    code = ("import sys, numpy as np\nfrom ood import analysis, evaluate, illustrations, metrics, plots, tour\n"
            "metrics.summarize(np.arange(5.0), np.arange(3.0)); metrics.roc_curve([1.0, 2.0], [0.5])\n"
            "assert 'sklearn' not in sys.modules and 'scipy.stats' not in sys.modules, 'sklearn imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_points_equal_scikit_learn(seed):
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(seed)
    s_id = rng.integers(0, 12 if seed % 2 else 10**6, 150) / 3.0 + 0.2
    s_ood = rng.integers(0, 12 if seed % 2 else 10**6, 90) / 3.0
    fpr, tpr, thr = metrics.roc_curve(s_id, s_ood)
    f2, t2, th2 = sk_roc(np.r_[np.ones(150), np.zeros(90)], np.r_[s_id, s_ood], drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2, atol=1e-12)
    np.testing.assert_allclose(tpr, t2, atol=1e-12)
    np.testing.assert_array_equal(thr[1:], th2[1:])
    assert thr[0] == np.inf and fpr[-1] == 1.0 and tpr[-1] == 1.0
