"""Seed aggregation of the tidy metric tables: per-seed rows, their mean and std rows, and the pivots of them.

``metrics`` frames have the columns :data:`METRIC_COLUMNS` (``ood.evaluate``) plus ``seed``: the training seed for
the rows of one run, ``mean`` for the mean over the seeds and ``std`` for their sample standard deviation (ddof 1;
empty with one seed). The evaluate stage shows one method's pivots with these; the tables and figures stages read the
aggregated ``metrics.csv``.

Set averages: the ``average`` rows (``ood.evaluate``: the mean over the profile's ``benchmark.average_over``, by
default every OOD set, as the papers report) are part of ``metrics.csv``. Where a profile splits its OOD sets into
near- and far-OOD (``benchmark.near``; the rest of ``benchmark.ood`` are far, as OpenOOD v1.5 splits its benchmarks)
:func:`group_averages` adds ``near_average`` and ``far_average`` rows the same way: per seed the mean over the group's
sets, then the mean and std of those over seeds. They are shown in the tables and ``summary.json`` only, not written
into ``metrics.csv``, whose rows stay one per method, seed (or statistic), scorer and OOD set plus ``average``.
"""
from __future__ import annotations

import pandas as pd

__all__ = ["METRIC_COLUMNS", "METRIC_LABELS", "LOWER_IS_BETTER", "STATS", "GROUP_AVERAGES", "aggregate",
           "aggregate_metrics", "aggregate_accuracy", "select_stat", "pivot", "average_table", "ranked_sets",
           "split_sets", "group_averages", "with_group_averages"]

#: The columns of one evaluation's tidy table (one row per scorer and OOD set, metrics in percent; ``ood.metrics``
#: defines each). ``fpr95`` (ID positive, the papers') is the headline; ``fpr95_ood_pos`` (OOD positive, OpenOOD's and
#: pytorch-ood's FPR@95) comes after the four original metrics.
METRIC_COLUMNS = ["benchmark", "method", "scorer", "ood_set", "fpr95", "auroc", "aupr_in", "aupr_out", "fpr95_ood_pos"]

METRIC_LABELS = {"fpr95": "FPR95", "auroc": "AUROC", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out",
                 "fpr95_ood_pos": "FPR95, OOD positive (OpenOOD, pytorch-ood)"}
#: The metrics for which lower is better (the rest: higher).
LOWER_IS_BETTER = ("fpr95", "fpr95_ood_pos")
#: The ``seed`` values of the aggregate rows.
STATS = ("mean", "std")
#: The ``ood_set`` labels of the near-/far-OOD averages (:func:`group_averages`), shown after ``average``.
GROUP_AVERAGES = ("near_average", "far_average")


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
    """Rows (method, scorer), columns OOD sets (then ``average``, then ``near_average`` and ``far_average`` where the
    frame has them), values the ``stat`` (mean or std over seeds) of ``metric``; keeps the given orders."""
    if metric not in METRIC_LABELS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRIC_LABELS)}")
    methods = methods or list(dict.fromkeys(metrics["method"]))
    scorers = scorers or list(dict.fromkeys(metrics["scorer"]))
    present = set(metrics["ood_set"])
    tail = ["average", *(g for g in GROUP_AVERAGES if g in present)]
    sets = [s for s in dict.fromkeys(metrics["ood_set"]) if s not in tail] + tail
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
    pick = lambda f: (f[(f.method == method) & (f.scorer == scorer)
                        & ~f.ood_set.isin(("average", *GROUP_AVERAGES))].set_index("ood_set")[metric])
    out = pd.DataFrame({"mean": pick(mean), "std": pick(std)})
    return out.sort_values("mean", ascending=(metric not in LOWER_IS_BETTER))


def split_sets(ood_sets: list[str], near: list[str] | None) -> tuple[list[str], list[str]]:
    """``(near, far)``: the sets of ``ood_sets`` named in ``near`` and the rest, both in the order of ``ood_sets``
    (``average`` and the group labels are not sets). ValueError when ``near`` names a set that is not there."""
    sets = [s for s in ood_sets if s not in ("average", *GROUP_AVERAGES)]
    near = list(near or [])
    unknown = [n for n in near if n not in sets]
    if unknown:
        raise ValueError(f"near-OOD set(s) {unknown} are not OOD sets of the metrics; allowed: {sets}")
    return [s for s in sets if s in near], [s for s in sets if s not in near]


def group_averages(metrics: pd.DataFrame, near: list[str] | None) -> pd.DataFrame:
    """The ``near_average`` and ``far_average`` rows of ``metrics`` (an aggregated frame, or one run's rows without
    ``seed``): per run (seed) and (benchmark, method, scorer) the unweighted mean of every metric over the near sets
    (``near``) and over the far ones (every other OOD set of the frame), as OpenOOD v1.5 averages its near-OOD and
    far-OOD groups; then, for an aggregated frame, their mean and sample std over seeds (:func:`aggregate`), like the
    ``average`` rows. Empty when ``near`` is empty; a group with no set has no rows. ValueError when a run lacks one
    of a group's sets."""
    near_sets, far_sets = split_sets(list(dict.fromkeys(metrics["ood_set"])), near)
    if not near_sets:
        return metrics.iloc[0:0]
    values = [c for c in METRIC_LABELS if c in metrics]
    seeded = "seed" in metrics
    runs = metrics[~metrics["seed"].astype(str).isin(STATS)] if seeded else metrics
    keys = ["benchmark", "method", *(["seed"] if seeded else []), "scorer"]
    parts = []
    for label, group in zip(GROUP_AVERAGES, (near_sets, far_sets)):
        if not group:
            continue
        g = runs[runs["ood_set"].isin(group)].groupby(keys, sort=False)
        short = g["ood_set"].nunique()
        short = short[short != len(group)]
        if len(short):
            raise ValueError(f"{label}: the run {dict(zip(keys, short.index[0]))} has "
                             f"{int(short.iloc[0])} of the sets {group}")
        parts.append(g[values].mean().reset_index().assign(ood_set=label))
    rows = pd.concat(parts, ignore_index=True)[[c for c in metrics.columns if c in ("ood_set", *keys, *values)]]
    if not seeded:
        return rows
    return aggregate(rows, ["benchmark", "method", "scorer", "ood_set"], values)


def with_group_averages(metrics: pd.DataFrame, near: list[str] | None) -> pd.DataFrame:
    """``metrics`` followed by its :func:`group_averages` rows (the frame the tables pivot)."""
    extra = group_averages(metrics, near)
    return pd.concat([metrics, extra], ignore_index=True) if len(extra) else metrics
