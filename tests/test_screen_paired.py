"""ood.screen: the paired-by-seed screen and the bootstrap interval of FPR95, against hand computations."""
import math

import numpy as np
import pandas as pd
import pytest

from ood import metrics, screen


def _rows(values: dict[str, list[float]], scorer="energy", ood_set="average"):
    return pd.DataFrame([{"method": m, "seed": str(s), "scorer": scorer, "ood_set": ood_set, "fpr95": v}
                         for m, vs in values.items() for s, v in enumerate(vs)]
                        + [{"method": m, "seed": "mean", "scorer": scorer, "ood_set": ood_set, "fpr95": -99.0}
                           for m in values])


def test_which_pairs_share_their_starting_checkpoints():
    assert screen.shares_start("greg", "energy_oe")          # both from ce
    assert screen.shares_start("energy_oe", "ce")            # energy_oe seed s starts from ce seed s
    assert screen.shares_start("bfm_greg", "bfm")
    assert not screen.shares_start("bfm_greg", "greg")       # from bfm and from ce
    assert not screen.shares_start("bfm", "ce")              # both from scratch
    assert not screen.shares_start("greg_plus", "greg", {"greg_plus": None, "greg": "ce"})   # GReg+ from scratch


def test_paired_sees_a_consistent_shift_that_the_unpaired_spread_hides():
    # seeds scatter by 10 points, a is 2 below b in every seed: unpaired stds (~10 each) hide it
    per_seed = _rows({"a": [20.0, 30.0, 40.0], "b": [22.0, 32.5, 41.5]})
    r = screen.paired(per_seed, "a", "b")
    d = np.array([-2.0, -2.5, -1.5])
    assert r["n_seeds"] == 3 and r["agree"] == 3
    assert r["mean_diff"] == pytest.approx(d.mean()) and r["std_diff"] == pytest.approx(d.std(ddof=1))
    assert r["verdict"] == "lower"


def test_paired_calls_nothing_when_a_seed_disagrees_or_the_scatter_is_large():
    assert screen.paired(_rows({"a": [20.0, 30.0, 40.0], "b": [22.0, 29.0, 42.0]}), "a", "b")["verdict"] == \
        "no clear difference"                                  # seed 1 disagrees
    r = screen.paired(_rows({"a": [20.0, 30.0, 40.0], "b": [20.1, 35.0, 40.2]}), "a", "b")
    assert r["agree"] == 3 and abs(r["mean_diff"]) < r["std_diff"] and r["verdict"] == "no clear difference"
    one = screen.paired(_rows({"a": [20.0], "b": [30.0]}), "a", "b")
    assert one["n_seeds"] == 1 and math.isnan(one["std_diff"]) and one["verdict"] == "no clear difference"
    with pytest.raises(KeyError, match="no seed of both"):
        screen.paired(_rows({"a": [1.0]}), "a", "b")


def test_paired_findings_keep_only_pairs_that_share_a_start():
    per_seed = pd.concat([_rows({"greg": [10.0, 11.0, 12.0], "energy_oe": [12.0, 13.5, 13.0], "bfm": [1, 2, 3.0],
                                 "ce": [5.0, 6.0, 7.0]}, ood_set=o) for o in ("x", "average")])
    claims = [("greg", "energy_oe", "penalty"), ("bfm", "ce", "bfm"), ("energy_oe", "ce", "oe")]
    f = screen.paired_findings(per_seed, claims)
    assert list(f.columns) == screen.PAIRED_COLUMNS
    assert sorted(set(zip(f.a, f.b))) == [("energy_oe", "ce"), ("greg", "energy_oe")]
    assert set(f.ood_set) == {"x", "average"}


def test_bootstrap_interval_brackets_the_point_estimate_and_narrows_with_more_images():
    rng = np.random.default_rng(1)
    id_s, ood_s = rng.normal(2, 1, 400), rng.normal(0, 1, 300)
    point = metrics.fpr_at_tpr(id_s, ood_s)
    lo, hi = screen.fpr95_interval(id_s, ood_s, n_boot=400, seed=0)
    assert lo <= point <= hi and 0 <= lo < hi <= 100
    lo2, hi2 = screen.fpr95_interval(np.tile(id_s, 16), np.tile(ood_s, 16), n_boot=400, seed=0)
    assert (hi2 - lo2) < (hi - lo) / 2                          # about 1/sqrt(16) as wide
    assert screen.fpr95_interval(id_s, ood_s, n_boot=400, seed=0) == (lo, hi)   # seeded


def test_bootstrap_resamples_by_the_fpr95_rule():
    # every ID score equal: the threshold is that score whatever the resample; OOD at or above it count as accepted
    id_s = np.full(50, 1.0)
    ood_s = np.array([1.0] * 10 + [0.0] * 10)                   # exactly half accepted (ties accepted)
    lo, hi = screen.fpr95_interval(id_s, ood_s, n_boot=2000, seed=3)
    assert lo < 50 < hi and metrics.fpr_at_tpr(id_s, ood_s) == 50.0
    assert screen.fpr95_interval(id_s, np.ones(20), n_boot=50) == (100.0, 100.0)
    with pytest.raises(ValueError, match="n_boot"):
        screen.fpr95_interval(id_s, ood_s, n_boot=5)
    with pytest.raises(ValueError, match="finite"):
        screen.fpr95_interval(id_s, np.array([np.nan]))


def _agg(values: dict[tuple[str, str], tuple[float, float]], sets=("x", "average")):
    rows = []
    for (m, s), (mean, std) in values.items():
        for o in sets:
            rows += [{"method": m, "scorer": s, "ood_set": o, "seed": "mean", "fpr95": mean},
                     {"method": m, "scorer": s, "ood_set": o, "seed": "std", "fpr95": std}]
    return pd.DataFrame(rows)


def test_posthoc_screen_compares_bfm_under_every_scorer_and_best_against_best():
    agg = _agg({("ce", "energy"): (60.0, 1.0), ("ce", "knn"): (40.0, 1.0), ("bfm", "energy"): (50.0, 1.0),
                ("bfm", "knn"): (45.0, 5.0)})
    assert screen.best_scorers(agg) == {"ce": "knn", "bfm": "knn"}
    f = screen.posthoc_findings(agg, ["energy", "knn"])
    avg = f[f.ood_set == "average"].set_index("comparison")
    assert avg.loc["bfm vs ce under energy", "verdict"] == "lower"          # 50 vs 60, stds 1 + 1
    assert avg.loc["bfm vs ce under knn", "verdict"] == "no clear difference"   # 45 vs 40, stds 5 + 1 = 6 > 5
    best = avg.loc["bfm (knn) vs ce (knn), each with its best scorer"]
    assert (best.scorer_a, best.scorer_b, best["diff"]) == ("knn", "knn", 5.0)
    assert screen.posthoc_findings(agg[agg.method == "ce"], ["energy"]).empty


def test_write_screens_writes_both_tables_and_says_what_a_screen_is(tmp_path):
    per_seed = _rows({"greg": [10.0, 11.0, 12.0], "energy_oe": [12.0, 13.5, 13.0]})
    agg = _agg({("greg", "energy"): (11.0, 1.0), ("energy_oe", "energy"): (12.8, 0.8)}, sets=("average",))
    written = screen.write_screens(per_seed, agg, [("greg", "energy_oe", "the penalty helps")], tmp_path,
                                   scorers=["energy"], init={"greg": "ce", "energy_oe": "ce"})
    assert [p.name for p in written] == ["findings_paired.csv", "findings_posthoc.csv", "screens.md"]
    md = (tmp_path / "screens.md").read_text()
    assert "not significance tests" in md and "3 of 3" in md and "BFM or CE did not run here." in md
    assert pd.read_csv(tmp_path / "findings_paired.csv").verdict.tolist() == ["lower"]


def _brute_force(id_s, sets, average_over, n_boot, rng, tpr=0.95):
    """Resample every image one by one (the textbook bootstrap), the oracle of the fast draw."""
    k = math.ceil(tpr * id_s.size)
    out = {o: [] for o in [*sets, "average"]}
    for _ in range(n_boot):
        t = np.sort(id_s[rng.integers(0, id_s.size, id_s.size)])[::-1][k - 1]     # the k-th largest
        for o, v in sets.items():
            out[o].append(100.0 * np.mean(v[rng.integers(0, v.size, v.size)] >= t))
        out["average"].append(np.mean([out[o][-1] for o in average_over]))
    return {o: np.array(v) for o, v in out.items()}


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_has_the_distribution_of_resampling_image_by_image(ties):
    rng = np.random.default_rng(5)
    id_s, a, b = rng.normal(1.5, 1, 60), rng.normal(0, 1, 40), rng.normal(0.5, 1, 25)
    if ties:   # scores on a coarse grid: many ties at the threshold, which count as accepted
        id_s, a, b = (np.round(x * 2) / 2 for x in (id_s, a, b))
    sets = {"a": a, "b": b}
    brute = _brute_force(id_s, sets, ["a", "b"], 6000, np.random.default_rng(0))
    for level in (0.2, 0.5, 0.8, 0.9, 0.95):
        fast = screen.fpr95_bootstrap(id_s, sets, n_boot=6000, seed=1, level=level)
        for o in ("a", "b", "average"):
            lo, hi = np.percentile(brute[o], [50 * (1 - level), 100 - 50 * (1 - level)])
            # the percentiles of two 6,000-draw samples of one distribution: within a few grid steps (1/25 = 4 %)
            assert abs(fast[o][0] - lo) <= 4.1 and abs(fast[o][1] - hi) <= 4.1, (o, level, fast[o], (lo, hi))


def test_bootstrap_average_uses_one_id_resample_for_every_set():
    # two identical OOD sets: with one shared ID threshold per replicate the average's interval is narrower than
    # independent thresholds would make it, and never outside the range of the sets' own
    rng = np.random.default_rng(2)
    id_s, v = rng.normal(1, 1, 300), rng.normal(0, 1, 300)
    ci = screen.fpr95_bootstrap(id_s, {"a": v, "b": v.copy()}, n_boot=2000, seed=0)
    assert ci["a"][0] <= ci["average"][0] and ci["average"][1] <= ci["a"][1] + 1e-9
    only_a = screen.fpr95_bootstrap(id_s, {"a": v, "b": v.copy()}, average_over=["a"], n_boot=2000, seed=0)
    assert only_a["average"] == only_a["a"]
    with pytest.raises(ValueError, match="average_over"):
        screen.fpr95_bootstrap(id_s, {"a": v}, average_over=["z"])


def test_interval_table_and_its_section(tmp_path):
    from ood.artifacts import save_scores

    rng = np.random.default_rng(3)
    files = {}
    for m, shift in (("ce", 1.0), ("greg", 2.0)):
        for seed in (0, 1):
            scores = {}
            for s in ("energy", "msp"):
                scores.update({f"{s}/id": rng.normal(shift, 1, 200), f"{s}/near": rng.normal(0, 1, 150),
                               f"{s}/far": rng.normal(-1, 1, 50)})
            files[(m, seed)] = tmp_path / f"{m}-{seed}.npz"
            save_scores(scores, files[(m, seed)])
    t = screen.interval_table(files, ["near", "far"], n_boot=500)
    assert list(t.columns) == screen.INTERVAL_COLUMNS and len(t) == 2 * 2 * 2 * 3
    assert (t.fpr95_lo <= t.fpr95).all() and (t.fpr95 <= t.fpr95_hi).all()
    z = np.load(files[("greg", 1)])
    row = t[(t.method == "greg") & (t.seed == 1) & (t.scorer == "msp") & (t.ood_set == "far")].iloc[0]
    assert row.fpr95 == metrics.fpr_at_tpr(z["msp/id"], z["msp/far"]) and row.n_ood == 50
    avg = t[(t.method == "greg") & (t.seed == 1) & (t.scorer == "msp") & (t.ood_set == "average")].iloc[0]
    assert avg.fpr95 == pytest.approx((metrics.fpr_at_tpr(z["msp/id"], z["msp/near"]) + row.fpr95) / 2)
    assert t.equals(screen.interval_table(files, ["near", "far"], n_boot=500))   # seeded per method/seed/scorer
    md = screen.interval_section(t)
    assert md.count("\n| ") == 1 + 4 and "near 150, far 50 images" in md
    assert f"{row.fpr95:.1f} [" in screen.interval_section(t, scorer="msp")


def test_a_runs_intervals_are_its_own_and_survive_the_csv_exactly(tmp_path):
    """The evaluate stage computes each run's intervals alone (ood.screen.run_intervals) and the tables stage reads
    them back from CSV: the rows must be those the whole table gives that run, and the CSV must give back the very
    same floats."""
    rng = np.random.default_rng(11)
    runs = {(m, s): {f"{sc}/{o}": rng.normal(mu, 1, n).astype(np.float32)
                     for sc in ("energy", "msp") for o, mu, n in (("id", 1.5, 300), ("near", 0, 120), ("far", -1, 7))}
            for m in ("ce", "greg") for s in (0, 2)}
    from ood.artifacts import save_scores

    files = {}
    for k, v in runs.items():
        files[k] = tmp_path / f"{k[0]}-{k[1]}.npz"
        save_scores(v, files[k])
    whole = screen.interval_table(files, ["near", "far"], average_over=["near"], n_boot=200)
    one = screen.run_intervals(runs[("greg", 2)], "greg", 2, ["near", "far"], average_over=["near"], n_boot=200)
    mine = whole[(whole.method == "greg") & (whole.seed == 2)].reset_index(drop=True)
    assert one.equals(mine)
    screen.save_intervals(one, tmp_path / "iv" / "greg.csv")
    back = screen.load_intervals([tmp_path / "iv" / "greg.csv"])
    assert back.equals(one)   # bit for bit, not to 2 decimals
    assert one.loc[one.ood_set == "far", "n_ood"].tolist() == [7, 7]
    with pytest.raises(FileNotFoundError, match="evaluate stage"):
        screen.load_intervals([tmp_path / "iv" / "ce.csv"])
