"""Seed aggregation of the tidy metric tables: per-seed rows, their mean and std rows, and the pivots of them.

``metrics`` frames have the columns :data:`METRIC_COLUMNS` (``ood.evaluate``) plus ``seed``: the training seed for
the rows of one run, ``mean`` for the mean over the seeds and ``std`` for their sample standard deviation (ddof 1;
empty with one seed). The evaluate stage shows one method's pivots with these; the tables and figures stages read the
aggregated ``metrics.csv``.
"""
from __future__ import annotations

import pandas as pd

__all__ = ["METRIC_COLUMNS", "METRIC_LABELS", "STATS", "aggregate", "aggregate_metrics", "aggregate_accuracy",
           "select_stat", "pivot", "average_table", "ranked_sets"]

#: The columns of one evaluation's tidy table (one row per scorer and OOD set, metrics in percent).
METRIC_COLUMNS = ["benchmark", "method", "scorer", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out"]

METRIC_LABELS = {"fpr95": "FPR95", "auroc": "AUROC", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}
#: The ``seed`` values of the aggregate rows.
STATS = ("mean", "std")


def aggregate(per_seed: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """The per-seed rows (``seed`` as text) followed by one ``mean`` and one ``std`` row per ``keys`` group."""
    runs = per_seed.copy()
    runs["seed"] = runs["seed"].astype(int).astype(str)
    g = runs.groupby(keys, sort=False)[values]
    stats = [g.mean().reset_index().assign(seed="mean"), g.std(ddof=1).reset_index().assign(seed="std")]
    return pd.concat([runs, *stats], ignore_index=True)[list(per_seed.columns)]


def aggregate_metrics(per_seed: pd.DataFrame) -> pd.DataFrame:
    """``metrics.csv``: per-seed metric rows (``ood.report.collect``) with their mean and std rows."""
    keys = ["benchmark", "method", "scorer", "ood_set"]
    cols = ["benchmark", "method", "seed", "scorer", "ood_set", *METRIC_LABELS]
    return aggregate(per_seed[cols], keys, list(METRIC_LABELS))


def aggregate_accuracy(per_seed: pd.DataFrame) -> pd.DataFrame:
    """``accuracy.csv``: per-seed ID accuracy rows (``benchmark, method, seed, id_accuracy``) with mean and std."""
    return aggregate(per_seed[["benchmark", "method", "seed", "id_accuracy"]], ["benchmark", "method"], ["id_accuracy"])


def select_stat(frame: pd.DataFrame, stat: str) -> pd.DataFrame:
    """The ``stat`` rows (mean or std) of an aggregated frame; a frame without ``seed`` is its own mean."""
    if "seed" not in frame:
        return frame if stat == "mean" else frame.iloc[0:0]
    return frame[frame["seed"].astype(str) == stat]


def pivot(metrics: pd.DataFrame, metric: str = "fpr95", methods: list[str] | None = None,
          scorers: list[str] | None = None, stat: str = "mean") -> pd.DataFrame:
    """Rows (method, scorer), columns OOD sets (``average`` last), values the ``stat`` (mean or std over seeds) of
    ``metric``; keeps the given orders."""
    if metric not in METRIC_LABELS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_LABELS)}")
    methods = methods or list(dict.fromkeys(metrics["method"]))
    scorers = scorers or list(dict.fromkeys(metrics["scorer"]))
    sets = [s for s in dict.fromkeys(metrics["ood_set"]) if s != "average"] + ["average"]
    t = select_stat(metrics, stat).pivot_table(index=["method", "scorer"], columns="ood_set", values=metric, sort=False,
                                               dropna=False)
    idx = pd.MultiIndex.from_tuples([(m, s) for m in methods for s in scorers if (m, s) in t.index],
                                    names=["method", "scorer"])
    return t.reindex(index=idx, columns=sets)


def average_table(metrics: pd.DataFrame, metric: str = "fpr95", methods: list[str] | None = None,
                  scorers: list[str] | None = None) -> pd.DataFrame:
    """Rows methods, columns scorers, values the mean over seeds of ``metric`` averaged over the OOD sets
    (the ``average`` column of :func:`pivot`), in the given orders."""
    t = pivot(metrics, metric, methods, scorers)["average"].unstack()
    return t.reindex(index=methods or list(dict.fromkeys(metrics["method"])),
                     columns=scorers or list(dict.fromkeys(metrics["scorer"])))


def ranked_sets(metrics: pd.DataFrame, method: str, *, scorer: str = "energy", metric: str = "fpr95") -> pd.DataFrame:
    """The OOD sets of one method and scorer from the hardest to the easiest (mean ``metric`` over seeds; for FPR95
    the highest first), with the std over seeds: what a sentence such as "set X is the hard case" must rest on."""
    mean, std = (select_stat(metrics, st) for st in STATS)
    pick = lambda f: (f[(f.method == method) & (f.scorer == scorer) & (f.ood_set != "average")]
                      .set_index("ood_set")[metric])
    out = pd.DataFrame({"mean": pick(mean), "std": pick(std)})
    return out.sort_values("mean", ascending=(metric != "fpr95"))
