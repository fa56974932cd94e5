"""Tables for humans (Markdown) and papers (LaTeX) from the tidy ``metrics.csv``.

Every caption states the metric conventions: FPR95 is the fraction of OOD samples scored at or
above the threshold that keeps 95% of ID test samples (ID is the positive class; lower is better);
AUROC, AUPR-In (ID positive) and AUPR-Out (OOD positive) in percent (higher is better).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

__all__ = ["CAPTION", "pivot", "write_tables", "summary"]

CAPTION = ("FPR95 (%, lower is better): fraction of OOD samples scored at or above the threshold that keeps 95% of "
           "ID test samples, ID positive. AUROC, AUPR-In (ID positive), AUPR-Out (OOD positive) in %, higher is better. "
           "'average' is the mean over the OOD sets.")

_LABELS = {"fpr95": "FPR95", "auroc": "AUROC", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out"}


def pivot(metrics: pd.DataFrame, metric: str = "fpr95", methods: list[str] | None = None,
          scorers: list[str] | None = None) -> pd.DataFrame:
    """Rows (method, scorer), columns OOD sets (``average`` last), values ``metric``; keeps the given orders."""
    if metric not in _LABELS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(_LABELS)}")
    methods = methods or list(dict.fromkeys(metrics["method"]))
    scorers = scorers or list(dict.fromkeys(metrics["scorer"]))
    sets = [s for s in dict.fromkeys(metrics["ood_set"]) if s != "average"] + ["average"]
    t = metrics.pivot_table(index=["method", "scorer"], columns="ood_set", values=metric, sort=False)
    idx = pd.MultiIndex.from_tuples([(m, s) for m in methods for s in scorers if (m, s) in t.index],
                                    names=["method", "scorer"])
    return t.reindex(index=idx, columns=sets)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_tables(metrics: pd.DataFrame, accuracy: pd.DataFrame, out_dir: str | Path, *, label: str = "",
                 methods: list[str] | None = None, scorers: list[str] | None = None) -> list[Path]:
    """Write metrics.csv, accuracy.csv and, per metric, ``<metric>.md`` and ``<metric>.tex``. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    metrics.to_csv(out / "metrics.csv", index=False, float_format="%.2f")
    accuracy.to_csv(out / "accuracy.csv", index=False, float_format="%.2f")
    written += [out / "metrics.csv", out / "accuracy.csv"]
    note = f" {label}" if label else ""
    for metric, name in _LABELS.items():
        t = pivot(metrics, metric, methods, scorers)
        md = f"**{name}** per OOD set.{note} {CAPTION}\n\n" + t.round(2).reset_index().to_markdown(index=False, floatfmt=".2f") + "\n"
        _write(out / f"{metric}.md", md)
        tex = t.round(2).to_latex(float_format="%.2f", caption=f"{name}.{note} {CAPTION}",
                                   label=f"tab:{metric}", multirow=True)
        _write(out / f"{metric}.tex", tex)
        written += [out / f"{metric}.md", out / f"{metric}.tex"]
    acc_md = f"ID test accuracy (%).{note}\n\n" + accuracy.round(2).to_markdown(index=False, floatfmt=".2f") + "\n"
    _write(out / "accuracy.md", acc_md)
    written.append(out / "accuracy.md")
    return written


def summary(metrics: pd.DataFrame, accuracy: pd.DataFrame, scorer: str = "energy") -> dict:
    """Headline numbers for ``dvc metrics show``: per method, ID accuracy and the average FPR95/AUROC of one scorer."""
    avg = metrics[(metrics["ood_set"] == "average") & (metrics["scorer"] == scorer)]
    acc = dict(zip(accuracy["method"], accuracy["id_accuracy"]))
    return {m: {"id_accuracy": round(float(acc.get(m, float("nan"))), 2),
                f"{scorer}_fpr95": round(float(r.fpr95), 2), f"{scorer}_auroc": round(float(r.auroc), 2)}
            for m, r in zip(avg["method"], avg.itertuples())}


def write_summary(metrics, accuracy, path, scorer: str = "energy") -> Path:
    path = Path(path)
    _write(path, json.dumps(summary(metrics, accuracy, scorer), indent=2, sort_keys=True) + "\n")
    return path
