"""Score one checkpoint with every post-hoc scorer over a benchmark, into one tidy table.

One pass over ID-train (for the scorers that fit statistics), ID-test and each OOD set collects the
logits and penultimate features once; every scorer runs off those, except the ones that must run
the network again on a perturbed input (ODIN). The result is one row per (scorer, OOD set) with
FPR95, AUROC, AUPR-In, AUPR-Out and FPR95 with OOD positive (``fpr95_ood_pos``, OpenOOD's FPR@95) in percent
(``ood.metrics.summarize``), plus an ``average`` row per scorer (the mean over the OOD sets, as both papers report),
and the ID accuracy.

Scores are written to ``scores.npz`` (key ``"<scorer>/<set>"``, the ID test set is ``"id"``) so that
tables and figures are re-made without running the network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ood.aggregate import METRIC_COLUMNS
from ood.artifacts import load_scores, save_scores
from ood.data import ArrayDataset, Loader, take_rows
from ood.distributed import gather_rows, setup, split_rows
from ood.metrics import fpr_at_closest_recall, summarize
from ood.models import OODNet
from ood.scorers import build_scorer, extract

__all__ = ["EvalResult", "evaluate", "METRIC_COLUMNS", "PROTOCOLS", "save_scores", "load_scores"]

#: Evaluation protocols (the names of ``ood.reference.PROTOCOLS``, whose text says where each comes from):
#: ``greg-detect`` (default): every image of each OOD set, one pass, FPR95 at TPR >= 95% (Greg-OOD detect.py);
#: ``energy-readme``: per OOD set, ``len(id_test) // 5`` images (2,000 for a 10,000-image test set, or all when the
#: set is smaller) drawn at random ``ENERGY_DRAWS`` times, the metrics averaged over the draws, FPR95 at the recall
#: closest to 95% (wetliu/energy_ood CIFAR/test.py ``--num_to_avg 10`` and ``fpr_and_fdr_at_recall``). The ID test
#: scores are all used in both. The Energy code also feeds LSUN-C uncropped at 36x36: name the registry set
#: ``lsun-c-36`` in the profile's ``benchmark.ood`` for that (GReg's detect.py and ``lsun-c`` crop the centre 32x32).
PROTOCOLS = ("greg-detect", "energy-readme")
ENERGY_DRAWS = 10



@dataclass
class EvalResult:
    metrics: pd.DataFrame          # METRIC_COLUMNS
    id_accuracy: float             # percent, on the ID test set
    scores: dict[str, np.ndarray]  # "<scorer>/<set>" -> scores (higher = more ID)


def _features(model, ds: ArrayDataset, device, batch_size: int, progress: bool):
    loader = Loader(ds, batch_size, device=device)
    if progress:
        loader = tqdm(loader, desc=f"features {ds.name}", leave=False, mininterval=2.0)
    return extract(model, loader, device=device)


def evaluate(model: OODNet, *, id_train: ArrayDataset, id_test: ArrayDataset, ood_sets: dict[str, ArrayDataset],
             scorers: dict[str, dict], benchmark: str, method: str, device="cpu", batch_size: int = 500,
             progress: bool = True, average_over: list[str] | None = None, protocol: str = "greg-detect",
             seed: int = 0) -> EvalResult:
    """Run every scorer of ``scorers`` (name -> parameters) on ``model``; see the module docstring.

    ``protocol``: one of :data:`PROTOCOLS` (``seed`` draws the subsets of ``energy-readme``; scoring a subset of a
    set's scores equals scoring the subset, every scorer being per sample once fitted).

    The ``average`` row is the mean over ``average_over`` (default: every OOD set); the paper profiles average over
    the papers' six far-OOD sets and report the near-OOD set (the other CIFAR) on its own row only.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    avg_sets = list(ood_sets) if average_over is None else list(average_over)
    unknown = [s for s in avg_sets if s not in ood_sets]
    if unknown or not avg_sets:
        raise ValueError(f"average_over {avg_sets!r}: unknown or empty; allowed: a non-empty subset of "
                         f"{list(ood_sets)}")
    w, device = setup(torch.device(device))   # torchrun: every rank scores its share of each set (ood.distributed)
    # channels_last: forward-only passes run faster on CPU (the times: benchmarks/README.md, "Timings behind the
    # code's choices") and use the tensor-core layout on CUDA; the model is left in eval mode and this format
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    built = {name: build_scorer(name, **(p or {})) for name, p in scorers.items()}
    def shared(ds, fn):
        """``fn(ds)``'s rows: computed here whole, or under torchrun on this rank's share and gathered in order."""
        if not w.distributed or len(ds) < w.size:
            return fn(ds)
        part = fn(take_rows(ds, split_rows(len(ds), w)))
        return (tuple(gather_rows(t, len(ds), w) for t in part) if isinstance(part, tuple)
                else gather_rows(part, len(ds), w))

    features = lambda ds: _features(model, ds, device, batch_size, progress)
    if any(s.needs_fit for s in built.values()):  # ID-train features only for the scorers fitted on them
        train_pen, train_logits, train_y = shared(id_train, features)
    sets = {"id": id_test, **ood_sets}
    feats = {name: shared(ds, features) for name, ds in sets.items()}
    pen_id, logits_id, y_id = feats["id"]
    id_accuracy = 100.0 * (logits_id.argmax(1) == y_id).float().mean().item()

    scores: dict[str, np.ndarray] = {}
    for sname, scorer in built.items():
        if scorer.needs_fit:
            scorer.fit_features(train_pen, train_logits, train_y, model)
        for set_name, ds in sets.items():
            if scorer.needs_network:
                # B023 (loop variable in a lambda) is moot: shared() calls the lambda here, in this iteration
                s = shared(ds, lambda part: torch.cat([scorer.score(model, x).detach()  # noqa: B023
                                                       for x, _ in Loader(part, batch_size, device=device)]))
            else:
                pen, logits, _ = feats[set_name]
                s = scorer.score_features(pen, logits, model)
            scores[f"{sname}/{set_name}"] = s.float().cpu().numpy()
    rows = []
    for sname in built:
        sid = scores[f"{sname}/id"]
        per_set = []
        for k, set_name in enumerate(ood_sets):
            m = _set_metrics(sid, scores[f"{sname}/{set_name}"], protocol, seed * 1_000 + k)
            if set_name in avg_sets:
                per_set.append(m)
            rows.append({"benchmark": benchmark, "method": method, "scorer": sname, "ood_set": set_name, **m})
        avg = {k: float(np.mean([m[k] for m in per_set])) for k in per_set[0]}
        rows.append({"benchmark": benchmark, "method": method, "scorer": sname, "ood_set": "average", **avg})
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return EvalResult(metrics=metrics, id_accuracy=id_accuracy, scores=scores)


def _set_metrics(sid: np.ndarray, sood: np.ndarray, protocol: str, seed: int) -> dict[str, float]:
    """The metrics of one OOD set under ``protocol`` (see :data:`PROTOCOLS`; ``energy-readme`` replaces only the
    ID-positive ``fpr95`` by the Energy code's closest-recall rule, ``fpr95_ood_pos`` keeps its own)."""
    if protocol == "greg-detect":
        return summarize(sid, sood)
    n = min(len(sood), len(sid) // 5)
    rng = np.random.default_rng(seed)  # the same draws for every scorer of a set
    draws = []
    for _ in range(ENERGY_DRAWS):
        sub = sood[rng.permutation(len(sood))[:n]]
        draws.append({**summarize(sid, sub), "fpr95": fpr_at_closest_recall(sid, sub, 0.95)})
    return {k: float(np.mean([d[k] for d in draws])) for k in draws[0]}
