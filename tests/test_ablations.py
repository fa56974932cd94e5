"""Sweeps as DVC experiments (ood.ablations): reading ``dvc exp show --json``, the committed sweep tables."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ood import ablations, config

ROOT = Path(__file__).resolve().parents[1]
WEIGHT = "profiles/synthetic.yaml:synthetic.method.greg.terms.grad_penalty.weight"
RATIO = "profiles/synthetic.yaml:synthetic.method.bfm.terms.background.ratio"


def _entry(rev, name, weight, fpr, metrics=True):
    params = {"profiles/synthetic.yaml": {"data": {"synthetic": {"method": {"greg": {"terms": {"grad_penalty": {
        "weight": weight}}}}}}}}
    m = {"results/synthetic/summary.json": {"data": {"greg": {"energy_fpr95": fpr, "energy_fpr95_std": 1.0,
                                                              "energy_auroc": 90.0, "energy_auroc_std": 0.5,
                                                              "id_accuracy": 89.0, "id_accuracy_std": 0.2}}}}
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": params, "metrics": m if metrics else {}}}


def test_collect_reads_the_experiments_of_dvc_exp_show():
    """The layout DVC 3 prints: the workspace, the baseline commit, its experiments nested under experiments/revs.
    Experiments outside the sweep's prefix and ones without metrics (failed) are left out."""
    shown = [_entry("workspace", None, 100.0, 20.5),
             {**_entry("abc", "main", 100.0, 20.5), "experiments": [
                 {"revs": [_entry("e1", "greg-weight-10", 10.0, 24.0)], "name": "greg-weight-10"},
                 {"revs": [_entry("e2", "greg-weight-300", 300.0, 17.0)], "name": "greg-weight-300"},
                 {"revs": [_entry("e3", "bfm-ratio-0.1", 100.0, 99.0)], "name": "bfm-ratio-0.1"},
                 {"revs": [_entry("e4", "greg-weight-30", 30.0, 0.0, metrics=False)], "name": "greg-weight-30"}]}]
    t = ablations.collect(shown, WEIGHT, match="greg-weight")
    assert list(t["value"]) == [10.0, 100.0, 300.0]
    assert list(t["experiment"]) == ["greg-weight-10", "baseline", "greg-weight-300"]
    assert list(t["fpr95"]) == [24.0, 20.5, 17.0] and set(t["knob"]) == {WEIGHT}
    with pytest.raises(config.ParamError, match="no experiment with metrics"):
        ablations.collect([_entry("x", "other", 1.0, 1.0, metrics=False)], WEIGHT, match="greg-weight")


def test_a_knob_the_profile_leaves_unset_takes_the_term_default():
    assert ablations.knob_default(RATIO) == 0.25   # BackgroundFeatures.defaults["ratio"]
    assert ablations.knob_default(WEIGHT) == 100.0  # the profile's own value


@pytest.mark.parametrize("sweep, param, values", [
    ("greg-weight", WEIGHT, [10.0, 30.0, 100.0, 300.0]),
    ("bfm-ratio", RATIO, [0.1, 0.25, 0.5]),
])
def test_committed_sweeps_hold_their_values_and_the_committed_baseline(sweep, param, values):
    """Each committed sweep has every value with every method, and its baseline rows are the committed pipeline's
    results/synthetic/summary.json (so a refreshed pipeline without a re-run sweep fails here)."""
    t = ablations.read_sweep("synthetic", sweep, ROOT)
    assert set(t["knob"]) == {param} and sorted(t["value"].unique()) == values
    summary = json.loads((ROOT / "results" / "synthetic" / "summary.json").read_text())
    assert set(t["method"]) == set(summary)
    base = t[t["experiment"] == "baseline"].set_index("method")
    assert set(base["value"]) == {ablations.knob_default(param)}
    for method, m in summary.items():
        assert base.loc[method, "fpr95"] == m["energy_fpr95"] and base.loc[method, "id_accuracy"] == m["id_accuracy"]


def test_export_without_experiments_says_what_to_run(tmp_path):
    (tmp_path / "shown.json").write_text(json.dumps([_entry("workspace", None, 100.0, 20.5, metrics=False)]))
    p = subprocess.run([sys.executable, "-m", "ood.ablations", "export", "--sweep", "greg-weight", "--param", WEIGHT,
                        "--json", str(tmp_path / "shown.json")], capture_output=True, text=True, cwd=ROOT)
    assert (p.returncode == 2 and p.stderr.startswith("error: no experiment with metrics")
            and "dvc queue start" in p.stderr)


def test_dvc_exp_show_reads_the_committed_revision(pipeline_root):
    """`dvc exp show --json` parses HEAD's pipelines (it did not while pipelines/cifar10-cpu/dvc.yaml was a symlink:
    DVC reads a symlink in a git revision as its text)."""
    p = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--no-fetch"], cwd=pipeline_root,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(p.stdout)
    head = [r for r in rows if r["rev"] != "workspace"]
    assert head and all(r["error"] is None for r in head), [r["error"] for r in head]
    assert "results/synthetic/summary.json" in head[0]["data"]["metrics"]


def test_the_readme_sweep_table_and_sentences_hold():
    """The sweep table of docs/ablations.md (the README's "Ablations as DVC experiments", moved there) quotes the
    committed sweep CSVs; its sentences hold against them (a difference is claimed only when it exceeds
    std a + std b)."""
    import re

    text = (ROOT / "docs" / "ablations.md").read_text()
    block = text[text.index("<!-- sweeps:synthetic -->"):text.index("<!-- /sweeps -->")]
    rows = re.findall(r"^\| ([\w-]+) \| ([\d.]+) \| (\w+) \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+) \|$", block,
                      re.M)
    assert len(rows) == 10
    for sweep, value, method, f, fs, a, as_ in rows:
        t = ablations.read_sweep("synthetic", sweep, ROOT)
        r = t[(t["method"] == method) & (t["value"] == float(value))].iloc[0]
        assert (f, fs, a, as_) == (f"{r.fpr95:.1f}", f"{r.fpr95_std:.1f}", f"{r.id_accuracy:.1f}",
                                   f"{r.id_accuracy_std:.1f}"), (sweep, value, method)
    clear = lambda x, y, col: abs(x[col] - y[col]) > x[f"{col}_std"] + y[f"{col}_std"]
    g = ablations.read_sweep("synthetic", "greg-weight", ROOT)
    g = g[g["method"] == "greg"].set_index("value")
    values = sorted(g.index)
    assert values == [10.0, 30.0, 100.0, 300.0]
    assert g.loc[300.0, "fpr95"] < g.loc[10.0, "fpr95"] and not clear(g.loc[10.0], g.loc[300.0], "fpr95")  # unpaired
    seeds = pd.read_csv(ROOT / "results" / "synthetic" / "sweeps" / "greg-weight-seeds.csv")
    avg = seeds[(seeds["method"] == "greg") & (seeds["ood_set"] == "average")]
    fpr = avg.pivot(index="seed", columns="value", values="fpr95")
    acc = avg.pivot(index="seed", columns="value", values="id_accuracy")
    assert list(fpr.index) == [0, 1, 2]
    for lo, hi in zip(values, values[1:]):  # "each step to a larger weight lowers it in all 3 seeds, beyond the spread"
        d = fpr[hi] - fpr[lo]
        assert (d < 0).all() and -d.mean() > d.std(ddof=1), (lo, hi, d.tolist())
    for v in values[:-1]:  # "ID accuracy at 300 is below that at every other weight in every seed"
        assert (acc[300.0] < acc[v]).all(), v
    b = ablations.read_sweep("synthetic", "bfm-ratio", ROOT)
    for method in ("bfm", "bfm_greg"):
        m = b[b["method"] == method].set_index("value")
        assert not any(clear(m.loc[x], m.loc[y], "fpr95") for x in m.index for y in m.index), method
