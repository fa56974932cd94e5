"""OOD-detection metrics, in percent, with the positive class stated.

Convention: scores are **higher = more in-distribution** (see ``ood/__init__.py``). Every function takes
the ID scores and the OOD scores as two 1-D arrays (numpy arrays, torch tensors, or lists) and returns a
Python float in percent.

=================  ==================================================================  ==============
metric             definition                                                          positive class
=================  ==================================================================  ==============
``fpr95``          fraction of OOD samples accepted (score >= t) at the largest        ID
                   threshold t that accepts at least 95 % of the ID samples
``auroc``          area under the ROC curve = P(s_id > s_ood) + 0.5 P(s_id = s_ood)    ID (symmetric)
``aupr_in``        average precision, ID samples positive, ranked by score             ID
``aupr_out``       average precision, OOD samples positive, ranked by ``-score``       OOD
``fpr95_ood_pos``  fraction of ID samples rejected (score <= t) at the smallest        OOD
                   threshold t that rejects at least 95 % of the OOD samples
=================  ==================================================================  ==============

FPR95 with ID as the positive class is the convention of both papers (BFM, GReg) and of the
Energy-OE / KNN / ReAct / ASH code, and stays the headline (``fpr95``). ``fpr95_ood_pos`` (:func:`fpr_at_tpr_ood`)
is the FPR at 95 % TPR with **OOD as the positive class**, what OpenOOD (since August 2023) and pytorch-ood report
as their FPR@95: another point of the same ROC curve, which differs in general (see its docstring). AUROC and the
AUPRs are the estimators of scikit-learn's
``roc_auc_score`` and ``average_precision_score`` (the step-wise AP that the Energy-OE and OE code
also use), computed here in numpy from sorted scores: ``tests/test_metrics.py`` checks them against
scikit-learn on random scores with ties (equal to 1e-9). Not importing scikit-learn (and SciPy, which it
imports) saves about 1.5 s in every process that scores, i.e. every evaluate stage. FPR95 is computed
directly from the sorted ID scores, which makes the threshold and its tie rule explicit (:func:`fpr_at_tpr`).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["fpr_at_tpr", "fpr_at_tpr_ood", "fpr_at_closest_recall", "tpr_threshold", "auroc", "aupr_in", "aupr_out",
           "summarize", "roc_curve"]


def _as_array(x, name: str) -> np.ndarray:
    """A 1-D float64 numpy copy of ``x``; ValueError on empty, non-1-D, NaN or infinite input."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, got shape {tuple(a.shape)}")
    if a.size == 0:
        raise ValueError(f"{name} is empty; need at least one score")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} has {int(bad.sum())} non-finite score(s) (first: {a[i]} at index {i}); "
                         f"allowed: finite numbers")
    return a


def _pair(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    return _as_array(id_scores, "id_scores"), _as_array(ood_scores, "ood_scores")


def _ranked(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the distinct scores ``t_1 > t_2 > ...`` of ``pos`` and ``neg``: ``t_k``, the number of positives
    and of all samples with score ``>= t_k`` (tied samples enter together)."""
    s = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)  # last index of each group of equal scores
    return s[last], np.cumsum(y)[last], (last + 1).astype(np.float64)


def roc_curve(id_scores, ood_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` as fractions, ID positive, one point per distinct score from high to
    low after a first point ``(0, 0)`` at threshold ``+inf``: the points of
    ``sklearn.metrics.roc_curve(y, s, drop_intermediate=False)`` (tested)."""
    s_id, s_ood = _pair(id_scores, ood_scores)
    t, tp, n = _ranked(s_id, s_ood)
    return (np.concatenate([[0.0], (n - tp) / s_ood.size]), np.concatenate([[0.0], tp / s_id.size]),
            np.concatenate([[np.inf], t]))


def _average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Step-wise average precision of ranking ``pos`` (positives) above ``neg``, higher score first.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct scores ``t_1 > t_2 > ...`` (``R_0 = 0``), where
    ``P_k`` and ``R_k`` count every sample with score ``>= t_k``: tied samples enter together, as in
    ``sklearn.metrics.average_precision_score``.
    """
    _, tp, n = _ranked(pos, neg)
    precision = tp / n
    recall = tp / pos.size
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """False-positive rate (%) at a true-positive rate of at least ``tpr``; ID is the positive class.

    Threshold: with the ``n`` ID scores sorted in decreasing order ``s_(1) >= ... >= s_(n)``, let
    ``m = ceil(tpr * n)`` (the fewest ID samples that make a fraction >= ``tpr``); the threshold is
    ``t = s_(m)``, the **largest** threshold that accepts at least ``m`` ID samples. A sample is
    accepted as ID when ``score >= t``; ties at the threshold count as accepted, i.e. as ID (so the
    achieved TPR can exceed ``tpr`` when ID scores tie at ``t``). The result is
    ``100 * #{OOD: score >= t} / #OOD``.

    The ViM code uses the same rule (threshold = an ID order statistic, ``ood >= thresh``) with
    ``m = floor(tpr * n)``; we take the ceiling so that the TPR is never below ``tpr`` (the two agree
    whenever ``tpr * n`` is an integer). Equivalently, ours is the first ROC point with TPR >= ``tpr`` when
    thresholds run from high to low: the smallest FPR at which the TPR reaches ``tpr``.

    This is **not** the rule of the Energy-OE code (``fpr_and_fdr_at_recall`` in wetliu/energy_ood
    ``utils/display_results.py``, also in the Outlier Exposure code; ID positive by default there too). Over the
    ROC points of all distinct ID and OOD scores, that code takes the recall (TPR) **closest** to ``tpr``
    (``argmin |recall - tpr|``), which can be **below** ``tpr``, and among the points with that recall the one
    with the **lowest** threshold, i.e. the largest FPR at that recall. With ``m = ceil(tpr * n)``:

    * without ties, when the closest recall is ``(m - 1) / n`` (below ``tpr``) both count the OOD scores
      ``>= s_(m)`` and agree; when it is ``m / n`` with ``m < n`` (e.g. ``tpr * n`` an integer) the Energy-OE
      value also counts the OOD scores strictly between ``s_(m+1)`` and ``s_(m)``, so the two agree only when
      there are none;
    * under ties they can differ more: ID scores tied at ``s_(m)`` make the reachable recalls jump (ID 1..47
      and three 0's, OOD [-1, 0, 0.5, 30.5]: ours 75 % at TPR 100 %, Energy-OE 50 % at recall 94 %), and an OOD
      score tied with ``s_(m)`` is accepted here but not by the Energy-OE code when it stops at ``(m - 1) / n``
      (ID 1..12, OOD [0.5, 1, 2.5, 13]: ours 75 %, Energy-OE 50 % at recall 11/12).

    ``tests/test_oracles.py`` checks these cases against an independent implementation of that rule.
    Computed from sorted scores instead of ``sklearn.metrics.roc_curve`` so that the threshold and the tie
    rule are explicit.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    return 100.0 * float(np.mean(s_ood >= tpr_threshold(s_id, tpr)))


def tpr_threshold(id_scores, tpr: float = 0.95) -> float:
    """The threshold ``t`` of :func:`fpr_at_tpr`: ``t = s_(m)``, ``m = ceil(tpr * n)``, with the ``n`` ID scores
    sorted in decreasing order - the largest threshold that accepts (score ``>= t``) at least ``tpr`` of the ID
    samples. The figures draw it; FPR95 is the fraction of OOD scores ``>= t``."""
    s_id = _as_array(id_scores, "id_scores")
    if not (isinstance(tpr, (int, float)) and 0.0 < tpr <= 1.0):
        raise ValueError(f"tpr={tpr!r} must be a number in (0, 1]")
    n = s_id.size
    # round() removes float fuzz such as 0.95 * 100 = 95.00000000000001 before the ceiling
    m = max(1, min(n, int(math.ceil(round(tpr * n, 9)))))
    return float(np.sort(s_id)[::-1][m - 1])


def fpr_at_tpr_ood(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """False-positive rate (%) at a true-positive rate of at least ``tpr`` with **OOD as the positive class**: the
    fraction of ID samples rejected at the threshold that rejects ``tpr`` of the OOD samples (column
    ``fpr95_ood_pos``).

    The rule of :func:`fpr_at_tpr` applied to the outlier score ``u = -score`` with the roles of the two sets
    swapped: with the ``n`` OOD outlier scores sorted in decreasing order ``u_(1) >= ... >= u_(n)`` and
    ``m = ceil(tpr * n)``, the threshold is ``t = u_(m)``, the largest that flags (``u >= t``) at least ``m`` OOD
    samples; ties at ``t`` count as flagged. The result is ``100 * #{ID: u >= t} / #ID``, i.e. in our sign, with
    ``s_[m]`` the m-th **smallest** OOD score: ``100 * #{ID: score <= s_[m]} / #ID``. It is the first point, from
    the highest outlier threshold down, of the OOD-positive ROC curve whose TPR reaches ``tpr``.

    Sources (the facts, not their code):

    * OpenOOD ``openood/evaluators/metrics.py`` ``auc_and_fpr_recall``: ``fpr_list[np.argmax(tpr_list >= 0.95)]``
      of ``sklearn.metrics.roc_curve(ood_indicator, -conf)``; OOD positive since commit 873e8c2 ("fix ood eval (ood as
      pos)", 2023-08-10), after the v1.5 tag of June 2023, whose ``fpr_recall`` still put ID positive. Equal to this
      function on scores without ties (tested). With ties it can differ: ``roc_curve``'s default
      ``drop_intermediate=True`` drops the points inside a straight run of the curve, and when the first point
      reaching 95 % lies inside a diagonal run (tied ID/OOD pairs) OpenOOD reports the next point's larger FPR (a
      20 + 20 case in ``tests/test_fpr_conventions.py``: 10 % here, 15 % there).
    * pytorch-ood ``fpr_at_tpr`` (``pytorch_ood.utils`` up to 0.2, ``pytorch_ood.metrics.functional`` in 0.4, the
      ``FPR95TPR`` of ``OODMetrics``): outlier scores, labels < 0 are OOD and positive, the first ROC point with
      TPR >= ``tpr`` (``torch.searchsorted``); ties enter at one threshold as here. Equal to this function with and
      without ties (tested against pytorch-ood 0.4).

    Why it differs from :func:`fpr_at_tpr` (ID positive): both read the same ROC curve, at different points.
    ``fpr_at_tpr`` fixes the threshold in the ID distribution (95 % of ID accepted) and counts the OOD mass above
    it; this one fixes it in the OOD distribution (95 % of OOD rejected) and counts the ID mass below it - on the
    ID-positive curve, 100 minus the largest TPR among the points with FPR <= 5 %. The two
    agree only when the curve is symmetric about the anti-diagonal (e.g. two score distributions that are mirror
    images); a detector whose OOD scores have a long tail into the ID scores, or ID scores with a long tail into
    the OOD ones, moves one and not the other. By hand: ID ``1..20``, OOD ``-1..-16, 3.5, 5.5, 7.5, 9.5``; ID
    positive: threshold 2 (19 of 20 ID), OOD accepted {3.5, 5.5, 7.5, 9.5}: 20 %; OOD positive: threshold 7.5
    (19 of 20 OOD at or below), ID rejected 1..7: 35 %.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    t = tpr_threshold(-s_ood, tpr)   # the m-th largest OOD outlier score
    return 100.0 * float(np.mean(-s_id >= t))


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve (%) with ID as the positive class (the value of ``sklearn.metrics.roc_auc_score``).

    ``100 * (P(s_id > s_ood) + 0.5 * P(s_id == s_ood))`` over all ID/OOD pairs (ties count half): the
    Mann-Whitney statistic, which equals the trapezoidal area under the ROC curve with tied scores as one
    threshold. Counted exactly with a binary search of each ID score in the sorted OOD scores.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    ood_sorted = np.sort(s_ood)
    below = np.searchsorted(ood_sorted, s_id, side="left")            # OOD scores < s_id
    tied = np.searchsorted(ood_sorted, s_id, side="right") - below   # OOD scores == s_id
    pairs = float(below.sum()) + 0.5 * float(tied.sum())
    return 100.0 * pairs / (s_id.size * s_ood.size)


def aupr_in(id_scores, ood_scores) -> float:
    """Area under the precision-recall curve (%) with **ID as the positive class**, scores as given.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct thresholds (step-wise, no interpolation): the
    estimator of ``sklearn.metrics.average_precision_score``, which the Energy-OE / OE code call.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    return 100.0 * _average_precision(s_id, s_ood)


def aupr_out(id_scores, ood_scores) -> float:
    """Area under the precision-recall curve (%) with **OOD as the positive class**, ranked by ``-score``.

    Same estimator as :func:`aupr_in` with the OOD samples as positives and the negated scores, so that the
    most OOD-like sample is ranked first.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    return 100.0 * _average_precision(-s_ood, -s_id)


def fpr_at_closest_recall(id_scores, ood_scores, recall: float = 0.95) -> float:
    """False-positive rate (%) by the rule of the Energy-OE / OE code (``fpr_and_fdr_at_recall``, wetliu/energy_ood
    ``utils/display_results.py``): the ROC point whose recall (TPR, ID positive) is **closest** to ``recall``.

    Over the distinct score values ``t`` taken as thresholds from the highest down to the first that accepts every ID
    sample, ``recall(t) = #{ID >= t} / n_id`` and ``fpr(t) = #{OOD >= t} / n_ood``; the point with the smallest
    ``|recall(t) - recall|`` is taken, and among equally close points the one with the lowest threshold. Unlike
    :func:`fpr_at_tpr` the recall may be below ``recall`` (see its docstring for when the two differ). Used by the
    ``energy-readme`` evaluation protocol (``ood.evaluate``) so that our numbers can sit beside the Energy README's.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    thr = np.unique(np.concatenate([s_id, s_ood]))[::-1]                   # distinct values, descending
    tps = len(s_id) - np.searchsorted(np.sort(s_id), thr, side="left")     # ID scores >= t
    fps = len(s_ood) - np.searchsorted(np.sort(s_ood), thr, side="left")   # OOD scores >= t
    full = int(np.argmax(tps == len(s_id)))                               # first threshold with every ID accepted
    dist = np.abs(tps[:full + 1] / len(s_id) - recall)
    pick = int(np.flatnonzero(dist == dist.min())[-1])                    # the lowest of the closest thresholds
    return 100.0 * float(fps[pick]) / len(s_ood)


def summarize(id_scores, ood_scores) -> dict[str, float]:
    """Every metric in percent, in the order of the ``metrics.csv`` columns: ``{"fpr95", "auroc", "aupr_in",
    "aupr_out", "fpr95_ood_pos"}`` (the two FPRs at 95 % TPR: ID positive, the papers'; OOD positive, OpenOOD's)."""
    s_id, s_ood = _pair(id_scores, ood_scores)
    return {
        "fpr95": fpr_at_tpr(s_id, s_ood, 0.95),
        "auroc": auroc(s_id, s_ood),
        "aupr_in": aupr_in(s_id, s_ood),
        "aupr_out": aupr_out(s_id, s_ood),
        "fpr95_ood_pos": fpr_at_tpr_ood(s_id, s_ood, 0.95),
    }
