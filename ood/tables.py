"""Tables for humans (Markdown) and papers (LaTeX) from the tidy ``metrics.csv``, over seeds.

``metrics.csv`` columns: ``benchmark, method, seed, scorer, ood_set, fpr95, auroc, aupr_in, aupr_out,
fpr95_ood_pos``. ``seed`` is the training seed for the rows of one run, ``mean`` for the mean over the seeds and
``std`` for their sample standard deviation (ddof 1; empty with one seed). ``accuracy.csv`` has the same ``seed``
rows. The Markdown and LaTeX tables show ``mean +- std``, one table per metric (``fpr95`` the headline);
:func:`compare` says whether two methods differ by more than their spread.

Every caption states the metric conventions: FPR95 is the fraction of OOD samples scored at or
above the threshold that keeps 95% of ID test samples (ID is the positive class; lower is better);
AUROC, AUPR-In (ID positive) and AUPR-Out (OOD positive) in percent (higher is better); FPR95 with OOD positive
(OpenOOD's and pytorch-ood's FPR@95, ``ood.metrics.fpr_at_tpr_ood``) is the fraction of ID test samples scored at or
below the threshold that flags 95% of the OOD samples (lower is better).

Near/far: where the profile names its near-OOD sets (``benchmark.near``, the rest far), the tables and
``summary.json`` add the ``near_average`` and ``far_average`` columns after the ``average`` over all sets
(``ood.aggregate.group_averages``); ``metrics.csv`` keeps its rows. ``near=None`` (the default of the writers) reads
``benchmark.near`` of the profile named in the frame's ``benchmark`` column (``ood.config.load_params``); a name that
is no profile, or a profile without the key, gives no split; ``near=[]`` asks for none.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ood.aggregate import (
    GROUP_AVERAGES,
    METRIC_LABELS,
    STATS,
    aggregate,
    aggregate_accuracy,
    aggregate_metrics,
    average_table,
    pivot,
    ranked_sets,
    select_stat,
    with_group_averages,
)
from ood.screen import unpaired

__all__ = ["CAPTION", "GROUP_CAPTION", "STATS", "aggregate", "select_stat", "pivot", "write_tables", "summary",
           "compare", "findings", "write_findings", "write_reference", "write_summary", "average_table", "ranked_sets",
           "aggregate_metrics", "aggregate_accuracy", "profile_near", "CLAIMS"]

CAPTION = ("FPR95 (%, lower is better): fraction of OOD samples scored at or above the threshold that keeps 95% of "
           "ID test samples, ID positive. AUROC, AUPR-In (ID positive), AUPR-Out (OOD positive) in %, higher is "
           "better. FPR95 with OOD positive (OpenOOD, pytorch-ood; %, lower is better): fraction of ID test samples "
           "scored at or below the threshold that flags 95% of OOD samples. 'average' is the mean over the OOD sets.")
#: Added to the caption where the near/far averages are shown.
GROUP_CAPTION = ("'near_average' and 'far_average': the means over the near-OOD sets ({near}) and the far-OOD sets "
                 "({far}), as OpenOOD v1.5 groups them.")


#: The comparisons the papers' claims make, (method, baseline, the claim): the tables notebook screens each with
#: :func:`compare` on every OOD set and writes ``findings.md``.
CLAIMS = [
    ("bfm", "ce", "BFM (background features as fake OOD, no outliers) lowers CE's FPR95 [BFM]"),
    ("oe", "ce", "Outlier Exposure lowers CE's FPR95 [OE]"),
    ("energy_oe", "ce", "Energy-OE fine-tuning lowers CE's FPR95 [Energy]"),
    ("greg", "energy_oe", "the gradient penalty improves on Energy-OE [GReg, Table 4]"),
    ("greg_plus", "greg", "energy-based cluster sampling improves on GReg [GReg+, Table 4]"),
    ("energy_oe_sampling", "energy_oe", "sampling alone improves on Energy-OE [GReg, Table 4]"),
    ("oe_grad", "oe", "the gradient penalty improves on OE [GReg, +Grad ablation]"),
    ("bfm_greg", "greg", "BFM on top of GReg improves on GReg [BFM, combination with OE methods]"),
]


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pm(mean: pd.DataFrame, std: pd.DataFrame, sep: str) -> pd.DataFrame:
    """``mean sep std`` text, 2 decimals (the mean alone where the std is undefined: one seed)."""
    std = std.reindex_like(mean)
    fmt = lambda a, b: "" if pd.isna(a) else f"{a:.2f}" if pd.isna(b) else f"{a:.2f}{sep}{b:.2f}"
    return pd.DataFrame([[fmt(a, b) for a, b in zip(ra, rb)] for ra, rb in zip(mean.to_numpy(), std.to_numpy())],
                        index=mean.index, columns=mean.columns)


def profile_near(metrics: pd.DataFrame) -> list[str]:
    """The near-OOD sets (``benchmark.near``) of the profile that the frame's ``benchmark`` column names, read with
    :func:`ood.config.load_params`; ``[]`` when the column names no single profile or the profile has no such key."""
    names = list(dict.fromkeys(metrics["benchmark"])) if "benchmark" in metrics else []
    if len(names) != 1:
        return []
    from ood import config

    block = (config.load_params().get("profiles") or {}).get(names[0])
    return list(((block or {}).get("benchmark") or {}).get("near") or [])


def _shown(metrics: pd.DataFrame, near: list[str] | None) -> tuple[pd.DataFrame, str]:
    """The frame the tables pivot (with the near/far averages) and the caption sentence that explains them."""
    near = profile_near(metrics) if near is None else list(near)
    shown = with_group_averages(metrics, near)
    if not near:
        return shown, ""
    sets = [s for s in dict.fromkeys(metrics["ood_set"]) if s not in ("average", *GROUP_AVERAGES)]
    far = [s for s in sets if s not in near]
    return shown, " " + GROUP_CAPTION.format(near=", ".join(near), far=", ".join(far) or "none")


def write_tables(metrics: pd.DataFrame, accuracy: pd.DataFrame, out_dir: str | Path, *, label: str = "",
                 methods: list[str] | None = None, scorers: list[str] | None = None,
                 near: list[str] | None = None) -> list[Path]:
    """Write metrics.csv, accuracy.csv (aggregated frames, see the module docstring) and, per metric,
    ``<metric>.md`` and ``<metric>.tex`` (mean +- std over seeds; columns the OOD sets, ``average``, and with near-OOD
    sets ``near_average`` and ``far_average``). ``near``: see the module docstring. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics.to_csv(out / "metrics.csv", index=False, float_format="%.2f")
    accuracy.to_csv(out / "accuracy.csv", index=False, float_format="%.2f")
    written += [out / "metrics.csv", out / "accuracy.csv"]
    seeds = sorted(set(metrics["seed"].astype(str)) - set(STATS)) if "seed" in metrics else []
    note = ((f" {label}" if label else "")
            + (f" Mean +- std over {len(seeds)} seeds ({', '.join(seeds)})." if seeds else ""))
    shown, groups = _shown(metrics, near)
    for metric, name in METRIC_LABELS.items():
        mean, std = (pivot(shown, metric, methods, scorers, stat=st) for st in STATS)
        md = (f"**{name}** per OOD set.{note} {CAPTION}{groups}\n\n"
              + _pm(mean, std, " ± ").reset_index().to_markdown(index=False) + "\n")
        _write(out / f"{metric}.md", md)
        tex = _pm(mean, std, " $\\pm$ ").to_latex(caption=f"{name}.{note} {CAPTION}{groups}", label=f"tab:{metric}",
                                                  multirow=True)
        _write(out / f"{metric}.tex", tex)
        written += [out / f"{metric}.md", out / f"{metric}.tex"]
    acc = select_stat(accuracy, "mean").set_index("method")[["id_accuracy"]]
    acc_std = select_stat(accuracy, "std").set_index("method")[["id_accuracy"]]
    acc_md = f"ID test accuracy (%).{note}\n\n" + _pm(acc, acc_std, " ± ").reset_index().to_markdown(index=False) + "\n"
    _write(out / "accuracy.md", acc_md)
    written.append(out / "accuracy.md")
    return written


#: The metrics of :func:`summary`, and the prefix of each set average's keys there.
SUMMARY_METRICS = ("fpr95", "auroc", "fpr95_ood_pos")
SUMMARY_SETS = {"average": "", "near_average": "near_", "far_average": "far_"}


def summary(metrics: pd.DataFrame, accuracy: pd.DataFrame, scorer: str = "energy",
            near: list[str] | None = None) -> dict:
    """Headline numbers for ``dvc metrics show``: per method, ID accuracy and, of one scorer, the average over the
    OOD sets of FPR95, AUROC and FPR95 with OOD positive (``<scorer>_fpr95``, ``<scorer>_auroc``,
    ``<scorer>_fpr95_ood_pos``), mean over seeds and (``*_std``) their standard deviation. With near-OOD sets
    (``near``, see the module docstring) the same for the near and far averages: ``<scorer>_near_fpr95``,
    ``<scorer>_far_fpr95``, ..."""
    shown, _ = _shown(metrics, near)
    out: dict = {}
    for stat, suffix in (("mean", ""), ("std", "_std")):
        rows = select_stat(shown, stat)
        rows = rows[rows["scorer"] == scorer]
        acc_rows = select_stat(accuracy, stat)
        acc = dict(zip(acc_rows["method"], acc_rows["id_accuracy"]))
        for m in dict.fromkeys(rows.loc[rows["ood_set"] == "average", "method"]):
            d = out.setdefault(m, {})
            d[f"id_accuracy{suffix}"] = _round(acc.get(m))
            for ood_set, prefix in SUMMARY_SETS.items():
                r = rows[(rows["method"] == m) & (rows["ood_set"] == ood_set)]
                if len(r) != 1:
                    continue
                for metric in SUMMARY_METRICS:
                    if metric in r:
                        d[f"{scorer}_{prefix}{metric}{suffix}"] = _round(r[metric].iloc[0])
    return out


def _round(v):
    return None if v is None or pd.isna(v) else round(float(v), 2)


def compare(metrics: pd.DataFrame, a: str, b: str, *, scorer: str = "energy", ood_set: str = "average",
            metric: str = "fpr95") -> dict:
    """Does method ``a`` differ from ``b`` on one (scorer, OOD set, metric) by more than the seed spread?

    The rule: the difference of the means is a finding only when it is larger than the sum of the two standard
    deviations over seeds (the intervals mean +- std do not overlap); otherwise the verdict is "no clear
    difference". With 3 seeds this is a coarse screen, not a significance test. Returns the means, stds, the
    difference ``a - b`` and the verdict (for FPR95 "lower"/"higher" means ``a``'s FPR95 is lower/higher).
    """
    def one(stat, m):
        f = select_stat(metrics, stat)
        v = f[(f.method == m) & (f.scorer == scorer) & (f.ood_set == ood_set)][metric]
        if len(v) != 1:
            raise KeyError(f"no {stat} row for method {m!r}, scorer {scorer!r}, set {ood_set!r} in the metrics")
        return float(v.iloc[0])

    ma, mb, sa, sb = one("mean", a), one("mean", b), one("std", a), one("std", b)
    sa, sb = (0.0 if pd.isna(x) else x for x in (sa, sb))
    diff, verdict = unpaired(ma, sa, mb, sb)
    return {"a": a, "b": b, "scorer": scorer, "ood_set": ood_set, "metric": metric, "mean_a": ma, "std_a": sa,
            "mean_b": mb, "std_b": sb, "diff": diff, "verdict": verdict}


def findings(metrics: pd.DataFrame, claims: list[tuple[str, str, str]] | None = None, *, scorer: str = "energy",
             ood_sets: list[str] | None = None, metric: str = "fpr95") -> pd.DataFrame:
    """:func:`compare` for every claim (default :data:`CLAIMS`) whose two methods ran, on every OOD set (default:
    each set and the average): one row each, with the claim's text."""
    sets = ood_sets or list(dict.fromkeys(select_stat(metrics, "mean")["ood_set"]))
    present = set(metrics["method"])
    rows = [{"claim": text, **compare(metrics, a, b, scorer=scorer, ood_set=o, metric=metric)}
            for a, b, text in (CLAIMS if claims is None else claims) if a in present and b in present for o in sets]
    return pd.DataFrame(rows, columns=FINDINGS_COLUMNS)


#: The columns of :func:`findings` (also when no claim's two methods ran).
FINDINGS_COLUMNS = ["claim", "a", "b", "scorer", "ood_set", "metric", "mean_a", "std_a", "mean_b", "std_b", "diff",
                    "verdict"]


def write_findings(found: pd.DataFrame, out_dir: str | Path, *, label: str = "") -> list[Path]:
    """``findings.csv`` and ``findings.md``: each claim's difference and verdict per OOD set (:func:`compare`); with
    no claim whose two methods ran, the header row and a sentence saying so."""
    out = Path(out_dir)
    found.to_csv(out / "findings.csv", index=False, float_format="%.2f")
    if found.empty:
        _write(out / "findings.md", f"No claim of ood.tables.CLAIMS compares two methods this pipeline ran. {label}\n")
        return [out / "findings.csv", out / "findings.md"]
    t = found.assign(**{"a (mean ± std)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(found.mean_a, found.std_a)],
                        "b (mean ± std)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(found.mean_b, found.std_b)],
                        "a - b": found["diff"].round(2)})
    cols = ["a", "b", "ood_set", "a (mean ± std)", "b (mean ± std)", "a - b", "verdict"]
    text = (f"Method a against method b, {found.metric.iloc[0].upper()} of the {found.scorer.iloc[0]} score (%). "
            f"{label} A difference is a finding only when it exceeds the sum of the two seed standard deviations; "
            "else 'no clear difference'. This is a coarse screen, not a significance test at three seeds; "
            "screens.md pairs the methods that share their seeds' starting checkpoints.\n\n")
    for claim, g in t.groupby("claim", sort=False):
        text += f"**Claim: {claim}.**\n\n" + g[cols].to_markdown(index=False) + "\n\n"
    _write(out / "findings.md", text)
    return [out / "findings.csv", out / "findings.md"]


def write_reference(metrics: pd.DataFrame, params: dict, profile: str, out_dir: str | Path) -> pd.DataFrame:
    """``reference.md``: our mean average FPR95 beside the papers' numbers of the same benchmark, network and
    evaluation protocol (:func:`ood.reference.for_profile`; the synthetic profile, which no paper reports, shows the
    CIFAR-10 profile's references with no number of ours). A method whose run is a published network (the params'
    ``pipeline.published``: a paper profile's own pipeline takes CE from the authors) gets a ``weights`` column saying
    so: its numbers are the authors' weights under our evaluation. Returns the side-by-side table."""
    from ood import reference

    ref_profile, protocol, same_protocol = reference.for_profile(params, profile, "fpr95")
    ours = select_stat(metrics, "mean") if profile == ref_profile else metrics.iloc[0:0]
    side = reference.side_by_side(ours, same_protocol, metric="fpr95", protocol=protocol)
    published = (params.get("pipeline") or {}).get("published") or {}
    note = ""
    if published and profile == ref_profile:
        from ood import config
        from ood.methods import METHODS

        def weights(m: str) -> str:
            if m in published:
                return f"the authors' ({published[m]}), our evaluation"
            init = config.method_config(params, m, profile).init if m in METHODS else None
            return f"fine-tuned here from the authors' ({published[init]})" if init in published else "trained here"

        side.insert(side.columns.get_loc("train_method") + 1, "weights", [weights(m) for m in side["train_method"]])
        note = (" Rows whose `weights` name a published network are the authors' weights scored by this project: "
                "the difference to the paper is then the evaluation's, not the training's.")
    _write(Path(out_dir) / "reference.md",
           f"Average FPR95 (%) of the {ref_profile} profile's network: ours ({profile} profile) beside the papers' "
           f"numbers measured with our protocol ({reference.PROTOCOLS[protocol]}).{note}\n\n"
           + reference.to_markdown(side) + "\n")
    return side


def write_summary(metrics, accuracy, path, scorer: str = "energy", near: list[str] | None = None) -> Path:
    """``summary.json``: :func:`summary` as JSON, keys sorted."""
    path = Path(path)
    _write(path, json.dumps(summary(metrics, accuracy, scorer, near), indent=2, sort_keys=True) + "\n")
    return path
