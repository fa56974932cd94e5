"""The findings screen of ood.tables (``compare``, ``findings``) against the rule written out here: a difference of
the means over seeds is called "lower" / "higher" (the sign of mean a - mean b) only when it is larger than the sum
of the two sample standard deviations (ddof 1), else "no clear difference"; a missing std (one seed) counts as 0.

The metrics frames are built by hand in the shape of ``metrics.csv`` (per-seed rows, then ``mean`` and ``std``
rows, the statistics computed here with numpy), except where ``aggregate_metrics`` is the step under test.
"""
import math

import numpy as np
import pandas as pd
import pytest

from ood import tables

METRICS = ("fpr95", "auroc", "aupr_in", "aupr_out", "fpr95_ood_pos")


def _verdict(ma, sa, mb, sb):
    """The screen's rule, written from its definition."""
    sa = 0.0 if sa is None or math.isnan(sa) else sa
    sb = 0.0 if sb is None or math.isnan(sb) else sb
    d = ma - mb
    if abs(d) > sa + sb:
        return "lower" if d < 0 else "higher"
    return "no clear difference"


def _frame(values):
    """An aggregated metrics frame from ``{(method, scorer, ood_set): {metric: [per-seed values]}}``: the per-seed
    rows (seed "0", "1", ...), then one mean and one sample-std (ddof 1) row per key, every metric (those not given
    are 50 on every seed)."""
    rows, stats = [], []
    for (m, s, o), per in values.items():
        per = {k: list(per.get(k, [50.0] * len(next(iter(per.values()))))) for k in METRICS}
        n = len(per["fpr95"])
        for i in range(n):
            rows.append({"benchmark": "toy", "method": m, "seed": str(i), "scorer": s, "ood_set": o,
                         **{k: per[k][i] for k in METRICS}})
        stats.append({"benchmark": "toy", "method": m, "seed": "mean", "scorer": s, "ood_set": o,
                      **{k: float(np.mean(per[k])) for k in METRICS}})
        stats.append({"benchmark": "toy", "method": m, "seed": "std", "scorer": s, "ood_set": o,
                      **{k: float(np.std(per[k], ddof=1)) if n > 1 else float("nan") for k in METRICS}})
    return pd.DataFrame(rows + stats)


def _stat_frame(entries):
    """Only mean and std rows: ``{(method, scorer, ood_set, metric): (mean, std)}`` (other metrics 50 +- 0)."""
    keys = dict.fromkeys((m, s, o) for m, s, o, _ in entries)
    rows = []
    for m, s, o in keys:
        mean = {k: 50.0 for k in METRICS}
        std = {k: 0.0 for k in METRICS}
        for (m2, s2, o2, k), (mu, sd) in entries.items():
            if (m2, s2, o2) == (m, s, o):
                mean[k], std[k] = mu, sd
        rows.append({"benchmark": "toy", "method": m, "seed": "mean", "scorer": s, "ood_set": o, **mean})
        rows.append({"benchmark": "toy", "method": m, "seed": "std", "scorer": s, "ood_set": o, **std})
    return pd.DataFrame(rows)


# (mean a, std a, mean b, std b, verdict worked out by hand from the rule)
CASES = {
    "at_the_boundary": (10.0, 1.0, 13.0, 2.0, "no clear difference"),    # |-3| = 1 + 2: not larger
    "just_beyond": (10.0, 1.0, 13.5, 2.0, "lower"),                      # 3.5 > 3
    "just_beyond_higher": (13.5, 1.0, 10.0, 2.0, "higher"),
    "beyond_max_and_quadrature_not_sum": (10.0, 1.0, 12.5, 2.0, "no clear difference"),  # 2.5 > 2, > 2.24, < 3
    "beyond_sum_not_twice_sum": (10.0, 1.0, 15.5, 2.0, "lower"),         # 5.5 > 3 (but < 6)
    "only_a_spread_counts_too": (20.0, 4.0, 15.0, 0.0, "higher"),        # 5 > 4 + 0
    "spread_of_a_alone_covers": (20.0, 5.5, 15.0, 0.0, "no clear difference"),
    "no_spread_any_difference": (10.0, 0.0, 10.25, 0.0, "lower"),
    "no_spread_no_difference": (10.0, 0.0, 10.0, 0.0, "no clear difference"),
    "one_seed_std_missing": (10.0, float("nan"), 11.0, 0.5, "lower"),    # NaN std = 0: 1 > 0.5
    "both_std_missing": (12.0, float("nan"), 11.5, float("nan"), "higher"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compare_verdict_is_the_summed_spread_rule(case):
    ma, sa, mb, sb, verdict = CASES[case]
    assert _verdict(ma, sa, mb, sb) == verdict                # the hand-worked verdict is the rule's
    f = _stat_frame({("a", "energy", "average", "fpr95"): (ma, sa), ("b", "energy", "average", "fpr95"): (mb, sb)})
    c = tables.compare(f, "a", "b")
    assert c["verdict"] == verdict
    assert (c["a"], c["b"], c["scorer"], c["ood_set"], c["metric"]) == ("a", "b", "energy", "average", "fpr95")
    assert c["mean_a"] == ma and c["mean_b"] == mb
    assert c["diff"] == pytest.approx(ma - mb, abs=1e-12)
    assert c["std_a"] == (0.0 if math.isnan(sa) else sa) and c["std_b"] == (0.0 if math.isnan(sb) else sb)
    # swapping the two methods flips the direction and keeps "no clear difference"
    back = tables.compare(f, "b", "a")["verdict"]
    assert back == {"lower": "higher", "higher": "lower"}.get(verdict, verdict)


def test_compare_reads_the_requested_scorer_set_and_metric():
    """Every (scorer, set, metric) holds another verdict, so reading the wrong row gives the wrong one."""
    entries = {}
    expected = {}
    rng = np.random.default_rng(0)
    for scorer in ("energy", "msp"):
        for ood_set in ("near", "far", "average"):
            for metric in METRICS:
                ma, mb = rng.uniform(10, 90, size=2).round(1)
                sa, sb = rng.uniform(0, 8, size=2).round(1)
                entries[("x", scorer, ood_set, metric)] = (ma, sa)
                entries[("y", scorer, ood_set, metric)] = (mb, sb)
                expected[(scorer, ood_set, metric)] = (_verdict(ma, sa, mb, sb), ma - mb)
    assert len({v for v, _ in expected.values()}) == 3         # all three verdicts occur
    f = _stat_frame(entries)
    for (scorer, ood_set, metric), (verdict, diff) in expected.items():
        c = tables.compare(f, "x", "y", scorer=scorer, ood_set=ood_set, metric=metric)
        assert c["verdict"] == verdict, (scorer, ood_set, metric)
        assert c["diff"] == pytest.approx(diff, abs=1e-9)
    with pytest.raises(KeyError):
        tables.compare(f, "x", "nobody")


def test_the_spread_is_the_sample_std_over_seeds():
    """From per-seed rows through ``aggregate_metrics``: a = 10, 12, 14 (sd 2 with ddof 1, 1.63 with ddof 0), b =
    13.8, 14.3, 14.8 (sd 0.5 / 0.41): |diff| = 2.3 is within 2 + 0.5 but beyond 1.63 + 0.41."""
    a, b = [10.0, 12.0, 14.0], [13.8, 14.3, 14.8]
    per_seed = pd.DataFrame([{"benchmark": "toy", "method": m, "seed": s, "scorer": "energy", "ood_set": o,
                              "fpr95": v, "auroc": 100 - v, "aupr_in": 50.0, "aupr_out": 50.0, "fpr95_ood_pos": 50.0}
                             for m, vals in (("a", a), ("b", b)) for s, v in enumerate(vals)
                             for o in ("s1", "average")])
    agg = tables.aggregate_metrics(per_seed)
    want = _verdict(np.mean(a), np.std(a, ddof=1), np.mean(b), np.std(b, ddof=1))
    assert want == "no clear difference"
    assert _verdict(np.mean(a), np.std(a, ddof=0), np.mean(b), np.std(b, ddof=0)) == "lower"   # ddof matters here
    c = tables.compare(agg, "a", "b")
    assert c["verdict"] == want
    assert c["std_a"] == pytest.approx(np.std(a, ddof=1), rel=1e-12)
    assert c["std_b"] == pytest.approx(np.std(b, ddof=1), rel=1e-12)
    assert c["mean_a"] == pytest.approx(12.0, rel=1e-12) and c["diff"] == pytest.approx(12.0 - 14.3, rel=1e-12)


# The papers' claims: (method, baseline) - the first method is the one claimed to improve on the second.
PAPER_COMPARISONS = [
    ("bfm", "ce"),                        # BFM: background features as fake OOD lower CE's FPR95
    ("oe", "ce"),                         # Outlier Exposure
    ("energy_oe", "ce"),                  # Energy-OE fine-tuning
    ("greg", "energy_oe"),                # GReg: the gradient penalty on top of Energy-OE
    ("greg_plus", "greg"),                # GReg+: energy-based cluster sampling on top of GReg
    ("energy_oe_sampling", "energy_oe"),  # GReg's ablation: sampling alone
    ("oe_grad", "oe"),                    # GReg's ablation: the gradient penalty on OE
    ("bfm_greg", "greg"),                 # BFM combined with an OE-style method
]


def _claims_frame(drop=()):
    """Three seeds per method and set; FPR95 per-seed values chosen so that the verdicts differ across claims and
    sets (and a method that no claim names)."""
    base = {"ce": 50, "bfm": 40, "oe": 30, "energy_oe": 20, "greg": 18, "greg_plus": 12, "energy_oe_sampling": 21,
            "oe_grad": 26, "bfm_greg": 19, "other": 5}
    spread = {"ce": 1.0, "bfm": 4.0, "oe": 2.0, "energy_oe": 1.0, "greg": 0.5, "greg_plus": 1.0,
              "energy_oe_sampling": 3.0, "oe_grad": 1.0, "bfm_greg": 2.0, "other": 1.0}
    shift = {"near": 0.0, "far": -7.0, "average": -3.5}
    values = {}
    for m, v in base.items():
        if m in drop:
            continue
        for o, sh in shift.items():
            # the far set moves bfm and greg_plus up (other verdicts there)
            extra = 12.0 if (o == "far" and m in ("bfm", "greg_plus")) else 0.0
            mu = v + sh + extra
            values[(m, "energy", o)] = {"fpr95": [mu - spread[m], mu, mu + spread[m]],
                                        "auroc": [100 - mu - 1, 100 - mu, 100 - mu + 1]}
    return _frame(values), values


def _oracle_rows(values, pairs, sets, metric="fpr95"):
    out = []
    for a, b in pairs:
        for o in sets:
            va, vb = values[(a, "energy", o)][metric], values[(b, "energy", o)][metric]
            ma, mb = np.mean(va), np.mean(vb)
            out.append((a, b, o, ma - mb, _verdict(ma, np.std(va, ddof=1), mb, np.std(vb, ddof=1))))
    return out


def test_findings_screens_every_paper_claim_in_its_direction_on_every_set():
    f, values = _claims_frame()
    found = tables.findings(f)
    want = _oracle_rows(values, PAPER_COMPARISONS, ["near", "far", "average"])
    assert len({w[4] for w in want}) == 3                      # all three verdicts occur
    got = list(zip(found["a"], found["b"], found["ood_set"], found["diff"], found["verdict"]))
    assert [g[:3] for g in got] == [w[:3] for w in want]       # which method vs which, claim by claim, set by set
    for g, w in zip(got, want):
        assert g[3] == pytest.approx(w[3], abs=1e-9), g[:3]
        assert g[4] == w[4], g[:3]
    # BFM's claims: against CE alone and on top of GReg; their texts name BFM and the baseline
    bfm = found[found["a"].str.startswith("bfm")]
    assert sorted(set(zip(bfm["a"], bfm["b"]))) == [("bfm", "ce"), ("bfm_greg", "greg")]
    for text, base in zip(bfm["claim"], bfm["b"]):
        assert "BFM" in text and {"ce": "CE", "greg": "GReg"}[base] in text
    near = found[(found["a"] == "bfm") & (found["ood_set"] == "near")].iloc[0]
    assert near["verdict"] == "lower"                          # 40 +- 4 vs 50 +- 1: BFM's FPR95 is lower


def test_findings_skips_claims_whose_methods_did_not_run_and_passes_its_options_on():
    f, values = _claims_frame(drop=("oe",))
    found = tables.findings(f)
    kept = [p for p in PAPER_COMPARISONS if "oe" not in p]
    assert list(dict.fromkeys(zip(found["a"], found["b"]))) == kept
    only = tables.findings(f, ood_sets=["far"], metric="auroc")
    want = _oracle_rows(values, kept, ["far"], metric="auroc")
    assert list(zip(only["a"], only["b"], only["ood_set"], only["verdict"])) == [(w[0], w[1], w[2], w[4]) for w in want]
    assert set(only["metric"]) == {"auroc"} and set(only["scorer"]) == {"energy"}
    own = tables.findings(f, [("greg_plus", "other", "my claim")])
    assert list(own["claim"]) == ["my claim"] * 3 and list(own["a"]) == ["greg_plus"] * 3
