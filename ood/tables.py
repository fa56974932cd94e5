"""Tables for humans (Markdown) and papers (LaTeX) from the tidy ``metrics.csv``, over seeds.

``metrics.csv`` columns: ``benchmark, method, seed, scorer, ood_set, fpr95, auroc, aupr_in, aupr_out``. ``seed`` is
the training seed for the rows of one run, ``mean`` for the mean over the seeds and ``std`` for their sample standard
deviation (ddof 1; empty with one seed). ``accuracy.csv`` has the same ``seed`` rows. The Markdown and LaTeX tables
show ``mean +- std``; :func:`compare` says whether two methods differ by more than their spread.

Every caption states the metric conventions: FPR95 is the fraction of OOD samples scored at or
above the threshold that keeps 95% of ID test samples (ID is the positive class; lower is better);
AUROC, AUPR-In (ID positive) and AUPR-Out (OOD positive) in percent (higher is better).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ood.aggregate import (
    METRIC_LABELS,
    STATS,
    aggregate,
    aggregate_accuracy,
    aggregate_metrics,
    average_table,
    pivot,
    ranked_sets,
    select_stat,
)

__all__ = ["CAPTION", "STATS", "aggregate", "select_stat", "pivot", "write_tables", "summary", "compare", "findings",
           "write_findings", "write_reference", "average_table", "ranked_sets",
           "aggregate_metrics", "aggregate_accuracy", "CLAIMS"]

CAPTION = ("FPR95 (%, lower is better): fraction of OOD samples scored at or above the threshold that keeps 95% of "
           "ID test samples, ID positive. AUROC, AUPR-In (ID positive), AUPR-Out (OOD positive) in %, higher is "
           "better. 'average' is the mean over the OOD sets.")


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


def write_tables(metrics: pd.DataFrame, accuracy: pd.DataFrame, out_dir: str | Path, *, label: str = "",
                 methods: list[str] | None = None, scorers: list[str] | None = None) -> list[Path]:
    """Write metrics.csv, accuracy.csv (aggregated frames, see the module docstring) and, per metric,
    ``<metric>.md`` and ``<metric>.tex`` (mean +- std over seeds). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics.to_csv(out / "metrics.csv", index=False, float_format="%.2f")
    accuracy.to_csv(out / "accuracy.csv", index=False, float_format="%.2f")
    written += [out / "metrics.csv", out / "accuracy.csv"]
    seeds = sorted(set(metrics["seed"].astype(str)) - set(STATS)) if "seed" in metrics else []
    note = ((f" {label}" if label else "")
            + (f" Mean +- std over {len(seeds)} seeds ({', '.join(seeds)})." if seeds else ""))
    for metric, name in METRIC_LABELS.items():
        mean, std = (pivot(metrics, metric, methods, scorers, stat=st) for st in STATS)
        md = (f"**{name}** per OOD set.{note} {CAPTION}\n\n"
              + _pm(mean, std, " ± ").reset_index().to_markdown(index=False) + "\n")
        _write(out / f"{metric}.md", md)
        tex = _pm(mean, std, " $\\pm$ ").to_latex(caption=f"{name}.{note} {CAPTION}", label=f"tab:{metric}",
                                                  multirow=True)
        _write(out / f"{metric}.tex", tex)
        written += [out / f"{metric}.md", out / f"{metric}.tex"]
    acc = select_stat(accuracy, "mean").set_index("method")[["id_accuracy"]]
    acc_std = select_stat(accuracy, "std").set_index("method")[["id_accuracy"]]
    acc_md = f"ID test accuracy (%).{note}\n\n" + _pm(acc, acc_std, " ± ").reset_index().to_markdown(index=False) + "\n"
    _write(out / "accuracy.md", acc_md)
    written.append(out / "accuracy.md")
    return written


def summary(metrics: pd.DataFrame, accuracy: pd.DataFrame, scorer: str = "energy") -> dict:
    """Headline numbers for ``dvc metrics show``: per method, ID accuracy and the average FPR95/AUROC of one scorer,
    mean over seeds and (``*_std``) their standard deviation."""
    out: dict = {}
    for stat, suffix in (("mean", ""), ("std", "_std")):
        avg = select_stat(metrics, stat)
        avg = avg[(avg["ood_set"] == "average") & (avg["scorer"] == scorer)]
        acc_rows = select_stat(accuracy, stat)
        acc = dict(zip(acc_rows["method"], acc_rows["id_accuracy"]))
        for m, r in zip(avg["method"], avg.itertuples()):
            d = out.setdefault(m, {})
            d[f"id_accuracy{suffix}"] = _round(acc.get(m))
            d[f"{scorer}_fpr95{suffix}"] = _round(r.fpr95)
            d[f"{scorer}_auroc{suffix}"] = _round(r.auroc)
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
    diff = ma - mb
    verdict = ("lower" if diff < 0 else "higher") if abs(diff) > sa + sb else "no clear difference"
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
    return pd.DataFrame(rows)


def write_findings(found: pd.DataFrame, out_dir: str | Path, *, label: str = "") -> list[Path]:
    """``findings.csv`` and ``findings.md``: each claim's difference and verdict per OOD set (:func:`compare`)."""
    out = Path(out_dir)
    found.to_csv(out / "findings.csv", index=False, float_format="%.2f")
    t = found.assign(**{"a (mean ± std)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(found.mean_a, found.std_a)],
                        "b (mean ± std)": [f"{m:.2f} ± {s:.2f}" for m, s in zip(found.mean_b, found.std_b)],
                        "a - b": found["diff"].round(2)})
    cols = ["a", "b", "ood_set", "a (mean ± std)", "b (mean ± std)", "a - b", "verdict"]
    text = (f"Method a against method b, {found.metric.iloc[0].upper()} of the {found.scorer.iloc[0]} score (%). "
            f"{label} A difference is a finding only when it exceeds the sum of the two seed standard deviations; "
            "else 'no clear difference'.\n\n")
    for claim, g in t.groupby("claim", sort=False):
        text += f"**Claim: {claim}.**\n\n" + g[cols].to_markdown(index=False) + "\n\n"
    _write(out / "findings.md", text)
    return [out / "findings.csv", out / "findings.md"]


def write_reference(metrics: pd.DataFrame, params: dict, profile: str, out_dir: str | Path) -> pd.DataFrame:
    """``reference.md``: our mean average FPR95 beside the papers' numbers of the same benchmark, network and
    evaluation protocol (:func:`ood.reference.for_profile`; the synthetic profile, which no paper reports, shows the
    CIFAR-10 profile's references with no number of ours). Returns the side-by-side table."""
    from ood import reference

    ref_profile, protocol, same_protocol = reference.for_profile(params, profile, "fpr95")
    ours = select_stat(metrics, "mean") if profile == ref_profile else metrics.iloc[0:0]
    side = reference.side_by_side(ours, same_protocol, metric="fpr95", protocol=protocol)
    _write(Path(out_dir) / "reference.md",
           f"Average FPR95 (%) of the {ref_profile} profile's network: ours ({profile} profile) beside the papers' "
           f"numbers measured with our protocol ({reference.PROTOCOLS[protocol]}).\n\n"
           + reference.to_markdown(side) + "\n")
    return side


def write_summary(metrics, accuracy, path, scorer: str = "energy") -> Path:
    path = Path(path)
    _write(path, json.dumps(summary(metrics, accuracy, scorer), indent=2, sort_keys=True) + "\n")
    return path
