"""Tables and figure helpers: content (rows, captions, axes, labels), not pixels."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_rgb

from ood import plots, tables
from ood.data import ArrayDataset


@pytest.fixture
def metrics():
    rows = []
    for m in ["ce", "greg"]:
        for s in ["msp", "energy"]:
            vals = []
            for i, o in enumerate(["a", "b"]):
                v = {"fpr95": 10.0 * (i + 1) + (m == "ce") * 5, "auroc": 90.0 - i, "aupr_in": 80.0, "aupr_out": 70.0,
                     "fpr95_ood_pos": 12.0 * (i + 1)}
                vals.append(v)
                rows.append({"benchmark": "toy", "method": m, "scorer": s, "ood_set": o, **v})
            rows.append({"benchmark": "toy", "method": m, "scorer": s, "ood_set": "average",
                         **{k: np.mean([v[k] for v in vals]) for k in vals[0]}})
    return pd.DataFrame(rows)


@pytest.fixture
def accuracy():
    return pd.DataFrame({"benchmark": ["toy", "toy"], "method": ["ce", "greg"], "id_accuracy": [95.0, 94.5]})


def test_pivot_orders_rows_and_puts_average_last(metrics):
    t = tables.pivot(metrics, "fpr95", methods=["greg", "ce"], scorers=["energy", "msp"])
    assert list(t.index) == [("greg", "energy"), ("greg", "msp"), ("ce", "energy"), ("ce", "msp")]
    assert list(t.columns) == ["a", "b", "average"]
    assert t.loc[("ce", "msp"), "average"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="allowed: fpr95"):
        tables.pivot(metrics, "fpr96")


def test_write_tables_and_summary(tmp_path, metrics, accuracy):
    written = tables.write_tables(metrics, accuracy, tmp_path, label="(toy)")
    names = {p.name for p in written}
    assert {"metrics.csv", "accuracy.csv", "fpr95.md", "fpr95.tex", "aupr_out.tex", "fpr95_ood_pos.md",
            "fpr95_ood_pos.tex", "accuracy.md"} <= names
    md = (tmp_path / "fpr95.md").read_text()
    assert "ID positive" in md and "(toy)" in md and "| greg" in md
    assert "\\caption" in (tmp_path / "auroc.tex").read_text()
    back = pd.read_csv(tmp_path / "metrics.csv")
    assert list(back.columns) == list(metrics.columns) and len(back) == len(metrics)
    p = tables.write_summary(metrics, accuracy, tmp_path / "summary.json")
    s = json.loads(p.read_text())
    assert s["greg"]["energy_fpr95"] == pytest.approx(15.0) and s["ce"]["id_accuracy"] == 95.0


def _scores(rng):
    return {"energy/id": rng.normal(2, 1, 300), "energy/a": rng.normal(0, 1, 200), "energy/b": rng.normal(-2, 1, 100)}


def test_score_figures_have_panels_labels_and_files(tmp_path):
    rng = np.random.default_rng(0)
    sc = _scores(rng)
    fig = plots.score_histograms(sc, "energy", ["a", "b"], path=tmp_path / "h")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert "higher = more ID" in fig.axes[0].get_xlabel()
    assert (tmp_path / "h.png").stat().st_size > 1000
    fig = plots.roc_curves(sc, "energy", ["a", "b"], path=tmp_path / "r", pdf=True)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("FPR") and ax.get_ylabel().startswith("TPR")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert (tmp_path / "r.pdf").is_file()
    fig = plots.score_histogram_grid({"ce": sc, "greg": sc}, "energy", ["a", "b"])
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel() == "ce"
    # the FPR95 printed in each panel is the tables' FPR95, and the dashed line is its threshold
    from ood.metrics import fpr_at_tpr, tpr_threshold

    assert fig.axes[0].texts[0].get_text() == f"FPR95 {fpr_at_tpr(sc['energy/id'], sc['energy/a']):.1f}%"
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == tpr_threshold(sc["energy/id"])
    fig = plots.roc_grid({"ce": sc, "greg": sc}, "energy", ["a", "b"])
    assert [ax.get_title() for ax in fig.axes] == ["ce", "greg"]


def test_heatmap_training_curves_and_sample_grid(tmp_path, metrics):
    fig = plots.heatmap(metrics, "fpr95", path=tmp_path / "hm", methods=["greg", "ce"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["greg", "ce"]
    assert ax.get_xlabel() == "post-hoc scorer" and "lower is better" in ax.get_title()
    hist = pd.DataFrame({"epoch": [1, 2], "loss_ce": [1.0, 0.5], "test_accuracy": [50.0, 70.0]})
    fig = plots.training_curves({"ce": hist}, path=tmp_path / "tc")
    assert fig.axes[1].get_ylabel() == "ID test accuracy (%)"
    ds = ArrayDataset(name="x", images=torch.zeros(5, 3, 32, 32, dtype=torch.uint8),
                      labels=torch.tensor([0, 1, 0, 1, 0]), classes=("p", "q"))
    fig = plots.sample_grid({"ID": ds, "OOD": ds}, n=3, path=tmp_path / "g")
    assert len(fig.axes) == 6 and fig.axes[0].get_ylabel() == "ID" and fig.axes[1].get_title() == "q"
    for name in ("hm", "tc", "g"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def _per_seed():
    # two methods x 3 seeds, one scorer, sets a and average; FPR95 values chosen by hand
    vals = {"ce": [40.0, 50.0, 60.0], "greg": [20.0, 21.0, 22.0], "bfm": [35.0, 45.0, 55.0]}
    rows = [{"benchmark": "toy", "method": m, "seed": s, "scorer": "energy", "ood_set": o, "fpr95": v, "auroc": 100 - v,
             "aupr_in": 50.0, "aupr_out": 50.0, "fpr95_ood_pos": v + 1}
            for m, vs in vals.items() for s, v in zip((0, 1, 2), vs) for o in ("a", "average")]
    return pd.DataFrame(rows)


def test_aggregate_adds_mean_and_sample_std_rows():
    agg = tables.aggregate_metrics(_per_seed())
    assert list(agg.columns) == ["benchmark", "method", "seed", "scorer", "ood_set", "fpr95", "auroc", "aupr_in",
                                 "aupr_out", "fpr95_ood_pos"]
    assert list(agg.seed.unique()) == ["0", "1", "2", "mean", "std"]
    ce = agg[(agg.method == "ce") & (agg.ood_set == "a")].set_index("seed")["fpr95"]
    assert ce["mean"] == 50.0 and ce["std"] == pytest.approx(10.0)  # sqrt(((-10)^2 + 0 + 10^2) / 2)
    t = tables.pivot(agg, "fpr95")
    assert t.loc[("greg", "energy"), "a"] == 21.0
    assert tables.pivot(agg, "fpr95", stat="std").loc[("greg", "energy"), "a"] == pytest.approx(1.0)


def test_compare_calls_a_difference_only_beyond_the_summed_spread(tmp_path):
    agg = tables.aggregate_metrics(_per_seed())
    c = tables.compare(agg, "greg", "ce", ood_set="a")
    assert (c["diff"], c["verdict"]) == (-29.0, "lower")          # |21 - 50| = 29 > 1 + 10
    c = tables.compare(agg, "bfm", "ce", ood_set="a")
    assert (c["diff"], c["verdict"]) == (-5.0, "no clear difference")   # 5 < 10 + 10
    assert tables.compare(agg, "ce", "greg", ood_set="a")["verdict"] == "higher"
    found = tables.findings(agg, [("greg", "ce", "claim one"), ("bfm", "ce", "claim two"), ("x", "ce", "absent")])
    assert len(found) == 4 and set(found.claim) == {"claim one", "claim two"}
    tables.write_findings(found, tmp_path)
    md = (tmp_path / "findings.md").read_text()
    assert "**Claim: claim one.**" in md and "21.00 ± 1.00" in md and "no clear difference" in md
    r = tables.ranked_sets(agg, "ce")
    assert list(r.index) == ["a"] and r.loc["a", "mean"] == 50.0


def test_findings_of_a_pipeline_that_ran_no_claims_pair_say_so(tmp_path):
    """A reduced pipeline (e.g. ce and greg only: no claim compares those two) still writes both findings files."""
    agg = tables.aggregate_metrics(_per_seed())
    found = tables.findings(agg, [("x", "ce", "absent")])
    assert found.empty and list(found.columns) == tables.FINDINGS_COLUMNS
    assert tables.write_findings(found, tmp_path) == [tmp_path / "findings.csv", tmp_path / "findings.md"]
    assert "No claim" in (tmp_path / "findings.md").read_text()
    assert (tmp_path / "findings.csv").read_text().startswith("claim,a,b,")


def _line_props(ax):
    return [(list(ln.get_xdata()), list(ln.get_ydata()), ln.get_color(), ln.get_linestyle(), ln.get_linewidth(),
             ln.get_marker(), ln.get_label()) for ln in ax.get_lines()]


def test_roc_panel_draws_the_roc_points_of_ood_metrics():
    from ood.metrics import roc_curve

    # by hand: ID 3, 2, 1 and OOD 2.5, 0 ranked 3 I, 2.5 O, 2 I, 1 I, 0 O; after (0, 0) one point per score
    fig, ax = plt.subplots()
    curves = plots.roc_panel(ax, [3.0, 2.0, 1.0], {"a": [2.5, 0.0]})
    fpr, tpr = [0, 0, 0.5, 0.5, 0.5, 1], [0, 1 / 3, 1 / 3, 2 / 3, 1, 1]
    curve, dot, tpr_line, diagonal = ax.get_lines()
    assert curve.get_label() == "a"
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    np.testing.assert_allclose(curves["a"], (fpr, tpr))
    # the dot: the first point reaching TPR 95% (1.0 at FPR 0.5), in the curve's colour; dotted TPR line; diagonal
    assert (list(dot.get_xdata()), list(dot.get_ydata()), dot.get_marker()) == ([0.5], [0.95], "o")
    assert dot.get_color() == curve.get_color()
    assert tpr_line.get_linestyle() == ":" and list(tpr_line.get_ydata()) == [0.95, 0.95]
    assert list(diagonal.get_xdata()) == [0, 1] and list(diagonal.get_ydata()) == [0, 1]
    plt.close(fig)

    rng = np.random.default_rng(1)
    sc = _scores(rng)
    fig, ax = plt.subplots()
    plots.roc_panel(ax, sc["energy/id"], {"a": sc["energy/a"], "b": sc["energy/b"]}, colors=("k", "tab:green"),
                    tpr=None)
    lines = ax.get_lines()
    assert ([ln.get_label() for ln in lines[:2]] == ["a", "b"]
            and [ln.get_color() for ln in lines[:2]] == ["k", "tab:green"])
    assert len(lines) == 3 and all(ln.get_marker() != "o" for ln in lines)  # tpr=None: no dots, no TPR line
    for line, name in zip(lines, ("a", "b")):
        f, t, _ = roc_curve(sc["energy/id"], sc[f"energy/{name}"])
        np.testing.assert_array_equal(line.get_xdata(), f)
        np.testing.assert_array_equal(line.get_ydata(), t)
    # the figures draw their axes with the panel: the same lines as a panel on a fresh axis
    ref_fig, ref = plt.subplots()
    plots.roc_panel(ref, sc["energy/id"], {"a": sc["energy/a"], "b": sc["energy/b"]})
    assert _line_props(plots.roc_curves(sc, "energy", ["a", "b"]).axes[0]) == _line_props(ref)
    ref_fig, ref = plt.subplots()
    plots.roc_panel(ref, sc["energy/id"], {"a": sc["energy/a"], "b": sc["energy/b"]}, line_width=1.1, marker_size=3.5)
    assert _line_props(plots.roc_grid({"ce": sc}, "energy", ["a", "b"]).axes[0]) == _line_props(ref)
    plt.close("all")


def test_histogram_panel_draws_density_histograms_and_the_fpr95_threshold():
    from ood.metrics import tpr_threshold

    rng = np.random.default_rng(2)
    sc = _scores(rng)
    sid, so = sc["energy/id"], sc["energy/a"]
    fig, ax = plt.subplots()
    edges, thr = plots.histogram_panel(ax, {"ID test": sid, "OOD": so})
    lo, hi = np.percentile(np.concatenate([sid, so]), [0.5, 99.5])
    np.testing.assert_array_equal(edges, np.linspace(lo, hi, 40))
    assert thr == tpr_threshold(sid, 0.95)
    assert [p.get_label() for p in ax.patches] == ["ID test", "OOD"]
    assert [p.get_facecolor()[:3] for p in ax.patches] == [to_rgb("tab:blue"), to_rgb("tab:red")]
    for patch, v in zip(ax.patches, (sid, so)):
        density, _ = np.histogram(v, edges, density=True)
        corners = patch.get_xy()
        for i, d in enumerate(density):  # the step outline has the corners (left edge, height) and (right edge, height)
            for x in (edges[i], edges[i + 1]):
                assert np.isclose(corners, (x, d), rtol=0, atol=1e-12).all(axis=1).any(), (i, x, d)
    (dashed,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert dashed.get_xdata()[0] == thr
    fig, ax = plt.subplots()
    _, none = plots.histogram_panel(ax, {"ID test": sid, "OOD": so, "other": sc["energy/b"]}, colors=("k", "r", "g"),
                                    bins=10, tpr=None)
    assert none is None and not ax.get_lines() and len(ax.patches) == 3
    # the figures draw their axes with the panel: the same outlines as a panel on a fresh axis
    ref_fig, ref = plt.subplots()
    plots.histogram_panel(ref, {"ID test": sid, "a": so})
    got = plots.score_histograms(sc, "energy", ["a", "b"]).axes[0]
    assert len(got.patches) == len(ref.patches) == 2
    assert all(np.array_equal(p.get_xy(), q.get_xy()) for p, q in zip(got.patches, ref.patches))
    assert _line_props(got) == _line_props(ref)
    ref_fig, ref = plt.subplots()
    plots.histogram_panel(ref, {"ID test": sid, "OOD": so})
    got = plots.score_histogram_grid({"ce": sc}, "energy", ["a", "b"]).axes[0]
    assert len(got.patches) == len(ref.patches) == 2
    assert all(np.array_equal(p.get_xy(), q.get_xy()) for p, q in zip(got.patches, ref.patches))
    assert _line_props(got) == _line_props(ref)
    plt.close("all")



def test_average_table_is_the_average_column_by_method_and_scorer(metrics):
    t = tables.average_table(metrics, "fpr95", ["greg", "ce"], ["energy", "msp"])
    assert list(t.index) == ["greg", "ce"] and list(t.columns) == ["energy", "msp"]
    avg = metrics[metrics.ood_set == "average"].set_index(["method", "scorer"])["fpr95"]   # the oracle: the rows
    for m in ["greg", "ce"]:
        for s in ["energy", "msp"]:
            assert t.loc[m, s] == avg[(m, s)]


def test_write_reference_pairs_our_mean_with_the_papers_number_of_the_profile(tmp_path):
    from ood import config

    params = config.load_params()
    ours = pd.DataFrame([{"benchmark": "cifar10", "method": m, "seed": seed, "scorer": "energy", "ood_set": "average",
                          "fpr95": v, "auroc": 90.0, "aupr_in": 90.0, "aupr_out": 90.0, "fpr95_ood_pos": 90.0}
                         for m, seed, v in [("greg", "0", 1.0), ("greg", "mean", 12.34), ("greg", "std", 0.5)]])
    side = tables.write_reference(ours, params, "cifar10", tmp_path)
    row = side[side.train_method == "greg"].iloc[0]
    assert row["ours"] == 12.34 and row["paper"] == 7.95        # GReg paper, WRN-40-2, energy, average FPR95
    text = (tmp_path / "reference.md").read_text()
    assert "ours (cifar10 profile)" in text and "12.34" in text and "7.95" in text
    # the synthetic profile has no paper numbers of its own: the CIFAR-10 references, none of ours beside them
    side = tables.write_reference(ours, params, "synthetic", tmp_path)
    assert (side["ours"] == "not run").all() and "ours (synthetic profile)" in (tmp_path / "reference.md").read_text()
    assert "weights" not in side.columns           # nothing published: the table keeps its columns


def test_write_reference_labels_the_rows_of_a_published_network(tmp_path):
    """In a paper profile's own pipeline CE's run is the authors' network: the fine-tunes from it say so; a method
    whose own run is published (here Energy-OE, as the authors' fine-tune) is labelled the authors' weights."""
    from ood import config

    params = config.load_params(config.repo_root() / "pipelines" / "cifar10" / "params.yaml")
    ours = pd.DataFrame([{"benchmark": "cifar10", "method": m, "seed": "mean", "scorer": "energy",
                          "ood_set": "average", "fpr95": v, "auroc": 90.0, "aupr_in": 90.0, "aupr_out": 90.0,
                          "fpr95_ood_pos": 90.0} for m, v in (("greg", 12.34), ("energy_oe", 30.0))])
    side = tables.write_reference(ours, params, "cifar10", tmp_path)
    assert set(side.loc[side.train_method == "greg", "weights"]) == {
        "fine-tuned here from the authors' (energy_cifar10_wrn_pretrained)"}
    params["pipeline"]["published"]["energy_oe"] = "energy_cifar10_wrn_s1_energy_ft"
    side = tables.write_reference(ours, params, "cifar10", tmp_path)
    assert set(side.loc[side.train_method == "energy_oe", "weights"]) == {
        "the authors' (energy_cifar10_wrn_s1_energy_ft), our evaluation"}
    assert "the authors' weights scored by this project" in (tmp_path / "reference.md").read_text()
