"""Ablations as DVC experiments: collect a sweep that ``dvc exp run --queue -S ...`` ran, and plot it.

A sweep is a set of DVC experiments of the pipeline that differ in one knob of a profile (``dvc exp run --queue -n
NAME -S 'profiles/synthetic.yaml:synthetic.method.greg.terms.grad_penalty.weight=30'``, then ``dvc queue start``).
Each experiment records its params and the pipeline's metrics file ``results/<profile>/summary.json`` (per method:
the energy score's FPR95 and AUROC and the ID accuracy, mean and std over the seeds). :func:`collect` reads them
from ``dvc exp show --json`` into one table; ``python -m ood.ablations export`` writes that table to
``results/<profile>/sweeps/<sweep>.csv``, where ``notebooks/06_ablations.ipynb`` reads it (experiments live in the
local repository's git refs, so the table is what a clone can re-plot). :func:`plot_sweep` draws FPR95 and ID
accuracy against the knob, one line per method, with the seed spread as error bars.

Nothing here tunes on the OOD test sets: a sweep shows how a training knob moves the test numbers, as the papers'
ablations do; a value chosen from it is chosen on the test sets and must be reported as such.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ood import config

__all__ = ["collect", "collect_seeds", "paired_sweep", "knob_default", "plot_sweep", "read_sweep", "sweep_path",
           "sweep_summary", "pipeline_studies", "main"]

#: The columns of a sweep table.
COLUMNS = ["knob", "experiment", "value", "method", "fpr95", "fpr95_std", "auroc", "auroc_std", "id_accuracy",
           "id_accuracy_std"]


def _split_param(param: str) -> tuple[str, list[str]]:
    """``'profiles/synthetic.yaml:synthetic.method.greg.terms.grad_penalty.weight'`` -> (file, key path)."""
    if ":" not in param:
        raise config.ParamError(f"knob {param!r} must be <params file>:<dotted key>, e.g. "
                                "profiles/synthetic.yaml:synthetic.method.greg.terms.grad_penalty.weight")
    file, key = param.split(":", 1)
    return file, key.split(".")


def knob_default(param: str, params: dict | None = None):
    """The value the pipeline uses when the profile does not set the knob: a loss term's default for
    ``<profile>.method.<m>.terms.<t>.<p>``, the method's recipe value for ``<profile>.method.<m>.<field>`` (e.g.
    ``steps_per_epoch``), else None."""
    _, keys = _split_param(param)
    if len(keys) == 6 and keys[1] == "method" and keys[3] == "terms":
        from ood.losses import build_term

        params = params or config.load_params()
        cfg = config.method_config(params, keys[2], keys[0])
        return build_term(keys[4], **(cfg.terms.get(keys[4]) or {})).params.get(keys[5])
    if len(keys) == 4 and keys[1] == "method":   # a recipe field set per method (steps_per_epoch, lr, ...)
        params = params or config.load_params()
        cfg = config.method_config(params, keys[2], keys[0])
        return getattr(cfg, keys[3], None)
    return None


def _entries(node):
    """Every experiment record of ``dvc exp show --json`` (the workspace, the baseline commit and each experiment),
    as dicts with ``rev``, ``name`` and ``data``; the nesting of that output differs between DVC versions."""
    if isinstance(node, list):
        for x in node:
            yield from _entries(x)
    elif isinstance(node, dict):
        if isinstance(node.get("data"), dict) and "params" in node["data"]:
            yield node
        for key in ("experiments", "revs"):
            if node.get(key):
                yield from _entries(node[key])


def _lookup(tree: dict, keys: list[str]):
    for k in keys:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def collect(exp_show: list, param: str, *, match: str | None = None, profile: str | None = None,
            default=None) -> pd.DataFrame:
    """The sweep table (:data:`COLUMNS`) of the experiments in ``exp_show`` (the parsed ``dvc exp show --json``).

    ``param``: the swept knob as ``<file>:<dotted key>``; ``match``: keep experiments whose name starts with it
    (the workspace row is kept too, as the baseline). An experiment that does not set the knob has ``default``
    (:func:`knob_default`). Experiments without metrics (failed or still queued) are left out.
    """
    file, keys = _split_param(param)
    profile = profile or keys[0]
    metrics_file = f"results/{profile}/summary.json"
    rows, seen = [], set()
    for e in _entries(exp_show):
        name = e.get("name") or e.get("rev")
        if e.get("rev") != "workspace" and match and not str(name).startswith(match):
            continue
        data = e["data"]
        metrics = _lookup(data.get("metrics") or {}, [metrics_file, "data"])
        if not metrics:
            continue
        value = _lookup(data["params"], [file, "data", *keys])
        value = default if value is None else value
        key = (name, value)
        if key in seen:
            continue
        seen.add(key)
        for method, m in metrics.items():
            rows.append({"knob": param, "experiment": "baseline" if e.get("rev") == "workspace" else name,
                         "value": value, "method": method,
                         "fpr95": m.get("energy_fpr95"), "fpr95_std": m.get("energy_fpr95_std"),
                         "auroc": m.get("energy_auroc"), "auroc_std": m.get("energy_auroc_std"),
                         "id_accuracy": m.get("id_accuracy"), "id_accuracy_std": m.get("id_accuracy_std")})
    if not rows:
        raise config.ParamError(f"no experiment with metrics ({metrics_file}) matches {match!r}; run the sweep "
                                "first (dvc exp run --queue ... && dvc queue start) and wait for dvc queue status to "
                                "show it done")
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["method", "value"], kind="stable").reset_index(drop=True)


#: The columns of a sweep's per-seed table (``<sweep>-seeds.csv``).
SEED_COLUMNS = ["knob", "experiment", "value", "method", "seed", "scorer", "ood_set", "fpr95", "auroc", "id_accuracy"]


def _git_text(rev: str, path: str, root: Path | None = None) -> str | None:
    """``path`` as committed in ``rev`` (an experiment's commit: its ``cache: false`` outputs are in git), or as it
    is in the working tree for ``rev == "workspace"``; None where it is absent."""
    root = root or config.repo_root()
    if rev == "workspace":
        f = root / path
        return f.read_text() if f.is_file() else None
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def collect_seeds(exp_show: list, param: str, *, match: str | None = None, profile: str | None = None,
                  default=None, scorer: str = "energy", read=None) -> pd.DataFrame:
    """Every seed's numbers (:data:`SEED_COLUMNS`) of the experiments :func:`collect` keeps: ``scorer``'s FPR95
    and AUROC on each OOD set and their average, and the ID accuracy, from each experiment's committed
    ``results/<profile>/metrics.csv`` and ``accuracy.csv`` (``read(rev, path) -> text``, default
    :func:`_git_text`). The paired screens of a sweep read this table (:func:`paired_sweep`)."""
    import io

    file, keys = _split_param(param)
    profile = profile or keys[0]
    read = read or _git_text
    rows, seen = [], set()
    for e in _entries(exp_show):
        name = e.get("name") or e.get("rev")
        if e.get("rev") != "workspace" and match and not str(name).startswith(match):
            continue
        text = read(e.get("rev"), f"results/{profile}/metrics.csv")
        if not text:
            continue
        value = _lookup(e["data"]["params"], [file, "data", *keys])
        value = default if value is None else value
        if (name, value) in seen:
            continue
        seen.add((name, value))
        m = pd.read_csv(io.StringIO(text))
        m = m[(m["scorer"] == scorer) & ~m["seed"].astype(str).isin(["mean", "std"])]
        acc_text = read(e.get("rev"), f"results/{profile}/accuracy.csv")
        acc = pd.read_csv(io.StringIO(acc_text)) if acc_text else pd.DataFrame(columns=["method", "seed"])
        acc = acc[~acc["seed"].astype(str).isin(["mean", "std"])]
        acc = {(a.method, int(a.seed)): a.id_accuracy for a in acc.itertuples()}
        exp = "baseline" if e.get("rev") == "workspace" else name
        rows += [{"knob": param, "experiment": exp, "value": value, "method": r.method, "seed": int(r.seed),
                  "scorer": scorer, "ood_set": r.ood_set, "fpr95": r.fpr95, "auroc": r.auroc,
                  "id_accuracy": acc.get((r.method, int(r.seed)))} for r in m.itertuples()]
    if not rows:
        raise config.ParamError(f"no experiment with results/{profile}/metrics.csv matches {match!r}; run the sweep "
                                "first and wait for dvc queue status to show it done")
    return pd.DataFrame(rows, columns=SEED_COLUMNS).sort_values(["method", "value", "seed", "ood_set"],
                                                                 kind="stable").reset_index(drop=True)


def paired_sweep(seeds: pd.DataFrame, pairs: list[tuple[str, str]], *, metric: str = "fpr95") -> pd.DataFrame:
    """The paired screen (:func:`ood.screen.paired`: the per-seed differences a - b, their mean and std, the seeds
    agreeing in sign, the verdict) of every pair at every value of the knob and on every OOD set of the
    per-seed table ``seeds`` (:func:`collect_seeds`). Valid where a and b share each seed's starting checkpoint,
    as the fine-tunes of a sweep from the same CE do."""
    from ood.screen import paired

    rows = []
    for value, g in seeds.groupby("value", sort=True):
        per_seed = g.assign(seed=g["seed"].astype(str))
        present = set(per_seed["method"])
        for a, b in pairs:
            if a not in present or b not in present:
                continue
            for o in dict.fromkeys(per_seed["ood_set"]):
                rows.append({"value": value, **paired(per_seed, a, b, scorer=per_seed["scorer"].iloc[0],
                                                      ood_set=o, metric=metric)})
    return pd.DataFrame(rows)


def pipeline_studies(profile: str, sweeps, root: Path | None = None) -> dict[str, str]:
    """The sweeps of ``sweeps`` that run as a pipeline of their own rather than as DVC experiments: ``sweep ->
    pipelines/<profile>-<sweep>`` where that folder has a ``params.yaml`` with a ``length`` block (a fine-tune-length
    study, ``ood.length_study``, which exports its own table)."""
    import yaml

    root = root or config.repo_root()
    out = {}
    for sweep in sweeps:
        folder = f"pipelines/{profile}-{sweep}"
        f = root / folder / "params.yaml"
        if f.is_file() and "length" in (yaml.safe_load(f.read_text()) or {}):
            out[sweep] = folder
    return out


def sweep_path(profile: str, sweep: str, root: Path | None = None) -> Path:
    return (root or config.repo_root()) / "results" / profile / "sweeps" / f"{sweep}.csv"


def read_sweep(profile: str, sweep: str, root: Path | None = None) -> pd.DataFrame:
    """A sweep table written by ``python -m ood.ablations export``; a clear error when it is missing."""
    path = sweep_path(profile, sweep, root)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep {sweep!r} at {path}; run it and export it (README, 'Ablations as DVC "
                                f"experiments': python -m ood.ablations export --sweep {sweep} --param ...)")
    return pd.read_csv(path)


def plot_sweep(table: pd.DataFrame, methods: list[str] | None = None, *, log_x: bool = False):
    """FPR95 (energy score) and ID accuracy against the swept knob (the table's ``knob``), one line per method,
    error bars = std over the seeds. Returns the figure."""
    import matplotlib.pyplot as plt

    knob = table["knob"].iloc[0].split(":", 1)[1].split(".", 1)[1]   # without the file and the profile
    methods = methods or sorted(table["method"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method in methods:
        t = table[table["method"] == method].sort_values("value")
        for ax, col in zip(axes, ("fpr95", "id_accuracy")):
            ax.errorbar(t["value"], t[col], yerr=t[f"{col}_std"], marker="o", capsize=3, label=method)
    for ax, title in zip(axes, ("FPR95, energy score (%): lower is better", "ID accuracy (%)")):
        ax.set_xlabel(knob)
        ax.set_title(title, fontsize=10)
        if log_x:
            ax.set_xscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ood.ablations", description="Export a DVC-experiment sweep.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write results/<profile>/sweeps/<sweep>.csv from dvc exp show --json")
    e.add_argument("--sweep", required=True, help="the sweep's name (and the experiments' name prefix)")
    e.add_argument("--param", required=True, help="the swept knob, <params file>:<dotted key>")
    e.add_argument("--json", type=Path, default=None, help="a saved dvc exp show --json (default: run it)")
    e.add_argument("--seeds", action="store_true", help="also <sweep>-seeds.csv: every seed's numbers, read from "
                   "each experiment's committed results/<profile>/metrics.csv (for the paired screens)")
    args = p.parse_args(argv)
    try:
        if args.json:
            shown = json.loads(args.json.read_text())
        else:
            out = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=config.repo_root(),
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise config.ParamError(f"dvc exp show --json failed: {out.stderr.strip().splitlines()[-1:]}")
            shown = json.loads(out.stdout)
        _, keys = _split_param(args.param)
        table = collect(shown, args.param, match=args.sweep, default=knob_default(args.param))
        path = sweep_path(keys[0], args.sweep)
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        print(f"{path}: {table['experiment'].nunique()} experiments x {table['method'].nunique()} methods")
        if args.seeds:
            seeds = collect_seeds(shown, args.param, match=args.sweep, default=knob_default(args.param))
            seeds_path = path.with_name(f"{args.sweep}-seeds.csv")
            seeds.to_csv(seeds_path, index=False, float_format="%.4g")
            print(f"{seeds_path}: {len(seeds)} rows (every seed and OOD set, energy score)")
    except (config.ParamError, FileNotFoundError, ValueError, json.JSONDecodeError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def sweep_summary(table: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """One row per value of the knob, ``mean ± std`` of FPR95 and ID accuracy for each of ``methods``."""
    t = table[table["method"].isin(methods)]
    fmt = lambda m, s: f"{m:.1f} ± {s:.1f}"
    out = t.assign(fpr95=[fmt(a, b) for a, b in zip(t.fpr95, t.fpr95_std)],
                   id_accuracy=[fmt(a, b) for a, b in zip(t.id_accuracy, t.id_accuracy_std)])
    wide = out.pivot_table(index=["value", "experiment"], columns="method", values=["fpr95", "id_accuracy"],
                           aggfunc="first")
    return wide.reindex(columns=[(c, m) for c in ("fpr95", "id_accuracy") for m in methods])
