"""A fine-tune-length study: the same fine-tunes, from the same starting checkpoints, run for several lengths.

The study of ``cifar10-cpu`` (``pipelines/cifar10-cpu-length/``, issue 42) fine-tunes Energy-OE, GReg and GReg+ from
each seed's CE of the profile for ``epochs x steps_per_epoch`` optimizer steps (its ``params.yaml``: ``length``,
one entry per run, ``<method>-<steps>``), into ``runs/<profile>/length/<key>/``; the profile's own fine-tunes are the
shortest length (their recipe's ``epochs x steps_per_epoch``, read from ``results/<profile>/``). Every run is scored
by the profile's evaluate stage code (every registered scorer), so the lengths differ in nothing but the length.

:func:`export` writes ``results/<profile>/sweeps/``:

* ``length-seeds.csv``: one row per length, method, seed, scorer and OOD set (the average included): FPR95, AUROC
  and the ID test accuracy (the columns of ``ood.ablations.SEED_COLUMNS``; ``value`` is the length in steps,
  ``experiment`` the run folder, ``profile`` for the profile's own run);
* ``length.csv``: the energy score's average FPR95 and AUROC and the ID accuracy, mean and std over the seeds per
  length and method (``ood.ablations.COLUMNS``: what ``ood.ablations.plot_sweep`` and ``sweep_summary`` read);
* ``length-intervals.csv``: every seed's FPR95 with its percentile-bootstrap interval over the images
  (``ood.screen.run_intervals``, 1,000 replicates), per scorer and set, as each run's evaluate stage computed them
  (``runs/<profile>/length/<key>/intervals.csv``); the profile's length is copied from its ``fpr95_intervals.csv``,
  which the tables stage gathered from the profile's evaluate stages;
* ``length-paired.csv``: the paired screens (``ood.screen.paired``: mean and std of the per-seed differences, the
  seeds agreeing in sign, the verdict) of the energy score's FPR95 and of the ID accuracy, in three kinds:
  ``pair`` (``a`` against ``b`` at one length: the penalty, GReg - Energy-OE; the sampler, GReg+ - GReg), ``growth``
  (a pair's per-seed difference at the longest length minus at the shortest: does the effect grow?) and ``length``
  (a method at the longest length against itself at the shortest: how the metric moves with length). All runs of
  one seed start from the same checkpoint (that seed's CE), so every comparison is paired by seed;
* ``length.md``: those screens as tables, with the per-seed bootstrap intervals of the average FPR95.

:func:`plot_length` draws FPR95 and ID accuracy against the length, one thin line per seed (paired by seed) and the
mean. ``notebooks/06_ablations.ipynb`` (run by the study's last stage with ``study`` set) calls both.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ood import config
from ood.ablations import COLUMNS, SEED_COLUMNS
from ood.screen import SCREEN_NOTE, load_intervals, paired

__all__ = ["study_runs", "collect", "summary", "intervals", "screens", "screen_summary", "export", "plot_length",
           "save_figure", "readme_table", "PAIRS", "SCORER", "OUTPUTS"]

#: The comparisons of the study [GReg, Table 4: the penalty on Energy-OE; Table 5: the sampler]: (a, b, what a - b is).
PAIRS = [("greg", "energy_oe", "the gradient penalty (GReg - Energy-OE)"),
         ("greg_plus", "greg", "the sampler (GReg+ - GReg)")]
#: The scorer of the screens and the summary table (the papers' score for these methods).
SCORER = "energy"
#: What :func:`export` writes under ``results/<profile>/sweeps/``.
OUTPUTS = ["length-seeds.csv", "length.csv", "length-intervals.csv", "length-paired.csv", "length.md"]
PAIRED_COLUMNS = ["kind", "what", "a", "b", "steps", "steps_b", "ood_set", "metric", "n_seeds", "mean_diff",
                  "std_diff", "agree", "verdict"]


def _root(root) -> Path:
    return Path(root) if root is not None else config.repo_root()


def study_runs(study: str | Path, root: Path | None = None) -> pd.DataFrame:
    """The runs of a study (its ``params.yaml``'s ``length``): one row per run, ``key``, ``method``, ``epochs``,
    ``steps_per_epoch``, ``steps`` (their product). A key must read ``<method>-<steps>``."""
    path = _root(root) / study / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no study parameters at {path}; a length study is a folder pipelines/<name>/ with "
                                "a params.yaml whose 'length' maps <method>-<steps> to method, epochs, steps_per_epoch")
    block = (yaml.safe_load(path.read_text()) or {}).get("length")
    if not isinstance(block, dict) or not block:
        raise config.ParamError(f"{path}: 'length' must map each run's key to its method, epochs and steps_per_epoch")
    rows = []
    for key, run in block.items():
        if not isinstance(run, dict) or set(run) != {"method", "epochs", "steps_per_epoch"}:
            raise config.ParamError(f"{path}: length.{key} must give exactly method, epochs and steps_per_epoch, "
                                    f"got {run!r}")
        steps = int(run["epochs"]) * int(run["steps_per_epoch"])
        if key != f"{run['method']}-{steps}":
            raise config.ParamError(f"{path}: length.{key} runs {run['method']} for {steps} steps "
                                    f"({run['epochs']} x {run['steps_per_epoch']}); name it {run['method']}-{steps}")
        rows.append({"key": key, "method": run["method"], "epochs": int(run["epochs"]),
                     "steps_per_epoch": int(run["steps_per_epoch"]), "steps": steps})
    return pd.DataFrame(rows)


def _profile_steps(params: dict, profile: str, method: str) -> int:
    cfg = config.method_config(params, method, profile)
    if cfg.steps_per_epoch is None:
        raise config.ParamError(f"{profile}: the recipe of {method!r} sets no steps_per_epoch; the study needs the "
                                "profile's fine-tune length in steps")
    return cfg.epochs * cfg.steps_per_epoch


def _run_dir(profile: str, key: str, root: Path) -> Path:
    return root / "runs" / profile / "length" / key


def collect(params: dict, profile: str, study: str | Path, root: Path | None = None) -> pd.DataFrame:
    """Every seed's numbers of every length (``ood.ablations.SEED_COLUMNS``, every scorer and set): the profile's
    fine-tunes from ``results/<profile>/runs/<method>.csv``, the study's from ``runs/<profile>/length/<key>/
    metrics.csv``. Raises ``FileNotFoundError`` naming the stage to run when a run has not been evaluated."""
    root = _root(root)
    runs = study_runs(study, root)
    knob = f"{Path(study).as_posix()}/params.yaml:length.steps"
    frames = []
    for method in dict.fromkeys(runs["method"]):
        path = root / "results" / profile / "runs" / f"{method}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"no {path}: the profile's evaluate stage of {method} has not run "
                                    f"(dvc repro pipelines/{profile}/dvc.yaml)")
        frames.append(pd.read_csv(path).assign(experiment="profile", value=_profile_steps(params, profile, method)))
    for r in runs.itertuples():
        path = _run_dir(profile, r.key, root) / "metrics.csv"
        if not path.is_file():
            raise FileNotFoundError(f"no {path}: stage evaluate@{r.key} of {study}/dvc.yaml has not run "
                                    f"(python -m ood.budget {study}/dvc.yaml --minutes N)")
        m = pd.read_csv(path)
        if set(m["method"]) != {r.method}:
            raise ValueError(f"{path} holds {sorted(set(m['method']))}, not {r.method}")
        frames.append(m.assign(experiment=r.key, value=r.steps))
    t = pd.concat(frames, ignore_index=True).assign(knob=knob)
    return t[SEED_COLUMNS].sort_values(["method", "value", "seed", "scorer", "ood_set"], kind="stable") \
        .reset_index(drop=True)


def summary(seeds: pd.DataFrame, scorer: str = SCORER, ood_set: str = "average") -> pd.DataFrame:
    """Mean and std (ddof 1) over the seeds of ``scorer``'s FPR95 and AUROC on ``ood_set`` and of the ID accuracy,
    per length and method: the columns of ``ood.ablations.COLUMNS``."""
    t = seeds[(seeds["scorer"] == scorer) & (seeds["ood_set"] == ood_set)]
    g = t.groupby(["knob", "experiment", "value", "method"], sort=False)[["fpr95", "auroc", "id_accuracy"]]
    out = g.mean().join(g.std(ddof=1).add_suffix("_std")).reset_index()
    return out[COLUMNS].sort_values(["method", "value"], kind="stable").reset_index(drop=True)


def intervals(params: dict, profile: str, study: str | Path, *, seeds: list[int],
              root: Path | None = None) -> pd.DataFrame:
    """Every seed's FPR95 with its bootstrap interval (``ood.screen.INTERVAL_COLUMNS`` plus ``steps``), per scorer and
    set, for the profile's fine-tunes (from ``results/<profile>/fpr95_intervals.csv``) and the study's runs (from
    ``runs/<profile>/length/<key>/intervals.csv``, which the study's evaluate stage computed with
    ``ood.screen.run_intervals``, each run drawing from its own generator: its method is named ``<key>`` there)."""
    root = _root(root)
    runs = study_runs(study, root)
    base = pd.read_csv(root / "results" / profile / "fpr95_intervals.csv")
    base = base[base["method"].isin(set(runs["method"]))]
    base = base.assign(steps=[_profile_steps(params, profile, m) for m in base["method"]])
    files = []
    for r in runs.itertuples():
        f = _run_dir(profile, r.key, root) / "intervals.csv"
        if not f.is_file():
            raise FileNotFoundError(f"no {f}: run stage evaluate@{r.key} of {study}/dvc.yaml")
        files.append(f)
    new = load_intervals(files)
    new = new[new["seed"].isin(seeds)].reset_index(drop=True)
    key_to = runs.set_index("key")
    new = new.assign(steps=key_to.loc[new["method"], "steps"].to_numpy(),
                     method=key_to.loc[new["method"], "method"].to_numpy())
    out = pd.concat([base, new], ignore_index=True)
    return out.sort_values(["method", "steps", "seed", "scorer", "ood_set"], kind="stable").reset_index(drop=True)


def _per_seed(seeds: pd.DataFrame, scorer: str) -> pd.DataFrame:
    return seeds[seeds["scorer"] == scorer].assign(seed=lambda t: t["seed"].astype(str))


def screens(seeds: pd.DataFrame, *, scorer: str = SCORER, pairs=None) -> pd.DataFrame:
    """The paired screens of the study (module docstring; columns :data:`PAIRED_COLUMNS`): every pair at every
    length, each pair's growth from the shortest length to the longest, and each method's change over that span,
    on every OOD set for FPR95 and on the ID accuracy (one row, ``ood_set`` "ID test")."""
    pairs = PAIRS if pairs is None else pairs
    t = _per_seed(seeds, scorer)
    lengths = sorted(t["value"].unique())
    lo, hi = lengths[0], lengths[-1]
    sets = list(dict.fromkeys(t["ood_set"]))
    acc_set = "average" if "average" in sets else sets[0]   # the ID accuracy is the same on every set's row
    # one frame whose "method" names a (method, length), so that ood.screen.paired takes any two of them
    tagged = t.assign(method=t["method"] + "@" + t["value"].astype(str))
    rows = []

    def add(kind, what, a, b, steps, steps_b, frame, ood_set, metric):
        r = paired(frame, a, b, scorer=scorer, ood_set=ood_set, metric=metric)
        a0, b0 = (x.rsplit("@", 1)[0] for x in (a, b))
        rows.append({"kind": kind, "what": what, "a": a0, "b": b0, "steps": steps, "steps_b": steps_b,
                     "ood_set": "ID test" if metric == "id_accuracy" else ood_set, "metric": metric,
                     **{k: r[k] for k in ("n_seeds", "mean_diff", "std_diff", "agree", "verdict")}})

    for a, b, what in pairs:
        for L in lengths:
            for o in sets:
                add("pair", what, f"{a}@{L}", f"{b}@{L}", L, L, tagged, o, "fpr95")
            add("pair", what, f"{a}@{L}", f"{b}@{L}", L, L, tagged, acc_set, "id_accuracy")
        # growth: d_s(hi) - d_s(lo), with d = a - b, as a paired screen of two "methods" whose values are the d_s
        for metric, metric_sets in (("fpr95", sets), ("id_accuracy", [acc_set])):
            for o in metric_sets:
                d = {}
                for L in (lo, hi):
                    va = tagged[(tagged["method"] == f"{a}@{L}") & (tagged["ood_set"] == o)].set_index("seed")[metric]
                    vb = tagged[(tagged["method"] == f"{b}@{L}") & (tagged["ood_set"] == o)].set_index("seed")[metric]
                    d[L] = (va - vb).dropna()
                frame = pd.DataFrame([{"method": f"d@{L}", "seed": s, "scorer": scorer, "ood_set": o, metric: v}
                                      for L in (lo, hi) for s, v in d[L].items()])
                add("growth", what, f"d@{hi}", f"d@{lo}", hi, lo, frame, o, metric)
                rows[-1].update(a=a, b=b)
    for m in dict.fromkeys(t["method"]):
        for o in sets:
            add("length", f"{m}: {hi} steps against {lo}", f"{m}@{hi}", f"{m}@{lo}", hi, lo, tagged, o, "fpr95")
        add("length", f"{m}: {hi} steps against {lo}", f"{m}@{hi}", f"{m}@{lo}", hi, lo, tagged, acc_set,
            "id_accuracy")
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _markdown(paired_t: pd.DataFrame, ivals: pd.DataFrame, summary_t: pd.DataFrame, notes: str,
              scorer: str) -> str:
    fmt = lambda r: f"{r.mean_diff:+.2f} ± {r.std_diff:.2f}"
    out = [f"# Fine-tune length ({scorer} score; FPR95 and ID accuracy in %)\n", notes, "", SCREEN_NOTE, ""]
    s = summary_t.assign(fpr95=[f"{m:.2f} ± {d:.2f}" for m, d in zip(summary_t.fpr95, summary_t.fpr95_std)],
                         id_accuracy=[f"{m:.2f} ± {d:.2f}" for m, d in zip(summary_t.id_accuracy,
                                                                           summary_t.id_accuracy_std)])
    out += ["## Mean ± std over the seeds (average FPR95)\n",
            s.rename(columns={"value": "steps"})[["method", "steps", "fpr95", "id_accuracy"]]
            .to_markdown(index=False), ""]
    for kind, title in (("pair", "At each length: mean ± std of a - b over the seeds"),
                        ("growth", "Does the effect grow? (a - b) at the longest length minus at the shortest"),
                        ("length", "Each method: the longest length minus the shortest")):
        k = paired_t[paired_t["kind"] == kind]
        k = k.assign(diff=[fmt(r) for r in k.itertuples()], seeds=[f"{r.agree} of {r.n_seeds}" for r in k.itertuples()])
        out += [f"## {title}\n", k[["what", "steps", "steps_b", "ood_set", "metric", "diff", "seeds", "verdict"]]
                .to_markdown(index=False), ""]
    iv = ivals[(ivals["scorer"] == scorer) & (ivals["ood_set"] == "average")]
    iv = iv.assign(interval=[f"{r.fpr95:.2f} [{r.fpr95_lo:.2f}, {r.fpr95_hi:.2f}]" for r in iv.itertuples()])
    wide = iv.pivot_table(index=["method", "steps"], columns="seed", values="interval", aggfunc="first")
    wide.columns = [f"seed {c}" for c in wide.columns]
    out += ["## Each seed's average FPR95 with its 95% bootstrap interval over the images\n",
            wide.reset_index().to_markdown(index=False), "",
            "Every scorer and set: length-intervals.csv; every scorer's numbers: length-seeds.csv.", ""]
    return "\n".join(out)


def export(params: dict, profile: str, study: str | Path, root: Path | None = None) -> dict[str, pd.DataFrame]:
    """Write :data:`OUTPUTS` into ``results/<profile>/sweeps/`` (module docstring) and return the tables by name."""
    root = _root(root)
    block = config.profile_params(params, profile)
    bench = block["benchmark"]
    seeds_t = collect(params, profile, study, root)
    summary_t = summary(seeds_t)
    ivals = intervals(params, profile, study, seeds=sorted(int(s) for s in seeds_t["seed"].unique()), root=root)
    paired_t = screens(seeds_t)
    out = root / "results" / profile / "sweeps"
    out.mkdir(parents=True, exist_ok=True)
    seeds_t.to_csv(out / "length-seeds.csv", index=False, float_format="%.4f")
    summary_t.to_csv(out / "length.csv", index=False, float_format="%.4f")
    ivals.to_csv(out / "length-intervals.csv", index=False, float_format="%.2f")
    paired_t.to_csv(out / "length-paired.csv", index=False, float_format="%.4f")
    (out / "length.md").write_text(_markdown(paired_t, ivals, summary_t, bench.get("notes", ""), SCORER))
    return {"seeds": seeds_t, "summary": summary_t, "intervals": ivals, "paired": paired_t}


def plot_length(seeds: pd.DataFrame, methods: list[str] | None = None, *, scorer: str = SCORER,
                ood_set: str = "average"):
    """FPR95 of ``scorer`` on ``ood_set`` and the ID accuracy against the fine-tune length (steps, log scale): per
    method one thin line per seed (the runs of a seed share their start, so the lines pair the lengths) and a thick
    line through the means. Returns the figure."""
    import matplotlib.pyplot as plt

    t = seeds[(seeds["scorer"] == scorer) & (seeds["ood_set"] == ood_set)]
    methods = methods or list(dict.fromkeys(t["method"]))
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for m in methods:
        tm = t[t["method"] == m]
        for ax, col in zip(axes, ("fpr95", "id_accuracy")):
            for _, g in tm.groupby("seed"):
                g = g.sort_values("value")
                ax.plot(g["value"], g[col], color=colors[m], lw=0.8, alpha=0.5, marker=".")
            mean = tm.groupby("value")[col].mean()
            ax.plot(mean.index, mean.to_numpy(), color=colors[m], lw=2.2, marker="o", label=m)
    lengths = sorted(t["value"].unique())
    for ax, title in zip(axes, (f"FPR95, {scorer} score, {ood_set} (%): lower is better", "ID test accuracy (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(v) for v in lengths])
        ax.minorticks_off()
        ax.set_xlabel("fine-tune steps (thin: one seed; thick: mean)")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, profile: str, sweep: str, root: Path | None = None) -> Path:
    """Write ``fig`` to ``figures/<profile>/<sweep>.png`` (``ood.plots.save``: the same bytes from the same numbers)."""
    from ood.plots import save

    path = _root(root) / "figures" / profile / f"{sweep}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save(fig, path)
    return path


def screen_summary(paired_t: pd.DataFrame, ood_sets=("average", "ID test")) -> pd.DataFrame:
    """The screens of :func:`screens` on ``ood_sets`` (the average FPR95 and the ID accuracy), one line each:
    ``mean ± std`` of the per-seed differences, the seeds agreeing, the verdict."""
    t = paired_t[paired_t["ood_set"].isin(ood_sets)]
    return pd.DataFrame({"kind": t["kind"], "what": t["what"], "steps": t["steps"], "against steps": t["steps_b"],
                         "metric": t["metric"],
                         "mean ± std": [f"{m:+.2f} ± {d:.2f}" for m, d in zip(t["mean_diff"], t["std_diff"])],
                         "seeds": [f"{a} of {n}" for a, n in zip(t["agree"], t["n_seeds"])],
                         "verdict": t["verdict"]}).reset_index(drop=True)


def readme_table(paired_t: pd.DataFrame) -> str:
    """The README's block of the study, over the span of lengths (the longest against the shortest): each pair at the
    longest length (``greg vs energy_oe`` | ``640``) and its growth (``growth: greg vs energy_oe`` | ``640 vs 40``) on
    every OOD set and the average (FPR95), and each method's ID accuracy (``greg: ID accuracy`` | ``640 vs 40``):
    mean ± std of the per-seed differences, the seeds agreeing, the verdict. Every length: ``length.md``."""
    hi = int(paired_t["steps"].max())
    lines = ["| comparison | OOD set | steps | a - b (mean ± std over seeds) | seeds agreeing | verdict |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for r in paired_t.itertuples():
        if r.kind == "pair" and r.metric == "fpr95" and r.steps == hi:
            comp, steps = f"{r.a} vs {r.b}", f"{r.steps}"
        elif r.kind == "growth" and r.metric == "fpr95":
            comp, steps = f"growth: {r.a} vs {r.b}", f"{r.steps} vs {r.steps_b}"
        elif r.kind == "length" and r.metric == "id_accuracy":
            comp, steps = f"{r.a}: ID accuracy", f"{r.steps} vs {r.steps_b}"
        else:
            continue
        lines.append(f"| {comp} | {r.ood_set} | {steps} | {r.mean_diff:+.2f} ± {r.std_diff:.2f} | "
                     f"{r.agree} of {r.n_seeds} | {r.verdict} |")
    return "\n".join(lines) + "\n"
