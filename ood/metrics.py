"""OOD-detection metrics, in percent, with the positive class stated.

Convention: scores are **higher = more in-distribution** (see ``ood/__init__.py``). Every function takes
the ID scores and the OOD scores as two 1-D arrays (numpy arrays, torch tensors, or lists) and returns a
Python float in percent.

=============  ==================================================================  =================
metric         definition                                                          positive class
=============  ==================================================================  =================
``fpr95``      fraction of OOD samples accepted (score >= t) at the largest        ID
               threshold t that accepts at least 95 % of the ID samples
``auroc``      area under the ROC curve = P(s_id > s_ood) + 0.5 P(s_id = s_ood)    ID (symmetric)
``aupr_in``    average precision, ID samples positive, ranked by score             ID
``aupr_out``   average precision, OOD samples positive, ranked by ``-score``       OOD
=============  ==================================================================  =================

FPR95 with ID as the positive class is the convention of both papers (BFM, GReg) and of the
Energy-OE / KNN / ReAct / ASH code. AUROC and the AUPRs come from scikit-learn (``roc_auc_score``,
``average_precision_score``, the step-wise AP that the Energy-OE and OE code also use); FPR95 is
computed directly from the sorted ID scores, which makes the threshold and its tie rule explicit
(:func:`fpr_at_tpr`).
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["fpr_at_tpr", "auroc", "aupr_in", "aupr_out", "summarize"]


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


def _labels_scores(s_id: np.ndarray, s_ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated scores and ID-indicator labels (1 = ID, 0 = OOD)."""
    y = np.concatenate([np.ones(s_id.size), np.zeros(s_ood.size)])
    return y, np.concatenate([s_id, s_ood])


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
    whenever ``tpr * n`` is an integer). It is also the first ROC point with TPR >= ``tpr`` when
    thresholds run from high to low, as in the Energy-OE ``fpr_and_fdr_at_recall``. Computed from sorted
    scores instead of ``sklearn.metrics.roc_curve`` so that the threshold and the tie rule are explicit.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    if not (isinstance(tpr, (int, float)) and 0.0 < tpr <= 1.0):
        raise ValueError(f"tpr={tpr!r} must be a number in (0, 1]")
    n = s_id.size
    # round() removes float fuzz such as 0.95 * 100 = 95.00000000000001 before the ceiling
    m = max(1, min(n, int(math.ceil(round(tpr * n, 9)))))
    t = np.sort(s_id)[::-1][m - 1]
    return 100.0 * float(np.mean(s_ood >= t))


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve (%), ``sklearn.metrics.roc_auc_score`` with ID as the positive class.

    Equals ``100 * (P(s_id > s_ood) + 0.5 * P(s_id == s_ood))`` over all ID/OOD pairs (ties count half).
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    y, s = _labels_scores(s_id, s_ood)
    return 100.0 * float(roc_auc_score(y, s))


def aupr_in(id_scores, ood_scores) -> float:
    """Area under the precision-recall curve (%) with **ID as the positive class**, scores as given.

    ``sklearn.metrics.average_precision_score``: ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct
    thresholds (step-wise, no interpolation; the Energy-OE / OE code use the same function).
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    y, s = _labels_scores(s_id, s_ood)
    return 100.0 * float(average_precision_score(y, s))


def aupr_out(id_scores, ood_scores) -> float:
    """Area under the precision-recall curve (%) with **OOD as the positive class**, ranked by ``-score``.

    Same estimator as :func:`aupr_in` (``average_precision_score``) on the labels ``1 - y`` and the
    negated scores, so that the most OOD-like sample is ranked first.
    """
    s_id, s_ood = _pair(id_scores, ood_scores)
    y, s = _labels_scores(s_id, s_ood)
    return 100.0 * float(average_precision_score(1 - y, -s))


def summarize(id_scores, ood_scores) -> dict[str, float]:
    """All four metrics in percent: ``{"fpr95", "auroc", "aupr_in", "aupr_out"}`` (FPR at 95 % TPR)."""
    s_id, s_ood = _pair(id_scores, ood_scores)
    return {
        "fpr95": fpr_at_tpr(s_id, s_ood, 0.95),
        "auroc": auroc(s_id, s_ood),
        "aupr_in": aupr_in(s_id, s_ood),
        "aupr_out": aupr_out(s_id, s_ood),
    }
