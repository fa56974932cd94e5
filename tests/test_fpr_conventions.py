"""The two FPR@95 conventions, named apart, and the near-/far-OOD averages.

``fpr95`` (ID positive: the papers', Hendrycks', energy_ood's, Greg-OOD's) against ``fpr95_ood_pos`` (OOD positive:
OpenOOD's since August 2023, pytorch-ood's) on hand-made sets where they differ, against pytorch-ood 0.4 and the
rule of OpenOOD's evaluator (written here from its definition with scikit-learn); then the ``near_average`` /
``far_average`` rows (``ood.aggregate.group_averages``) in the tables and ``summary.json``, and the profiles'
``benchmark.near`` keys (OpenOOD v1.5's split).
"""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_ood.metrics import OODMetrics
from pytorch_ood.metrics.functional import fpr_at_tpr as ptood_fpr_at_tpr

from ood import aggregate, config, report, tables
from ood.metrics import aupr_in, aupr_out, auroc, fpr_at_tpr, fpr_at_tpr_ood, summarize

# ---------------------------------------------------------------------------------------------
# The two FPRs by hand
# ---------------------------------------------------------------------------------------------

#: 20 ID and 20 OOD scores (higher = more ID) where the two conventions differ.
HAND_ID = np.arange(1.0, 21.0)
HAND_OOD = np.r_[-np.arange(1.0, 17.0), [3.5, 5.5, 7.5, 9.5]]


def test_hand_made_sets_give_different_fprs_under_the_two_conventions():
    # ID positive: keep ceil(0.95 * 20) = 19 ID scores -> threshold = 19th largest ID score = 2; OOD scores >= 2:
    #   3.5, 5.5, 7.5, 9.5 -> 4 / 20 = 20 %.
    # OOD positive: reject ceil(0.95 * 20) = 19 OOD scores -> threshold = 19th smallest OOD score: -16..-1 are the
    #   first 16, then 3.5, 5.5, 7.5 -> 7.5; ID scores <= 7.5: 1..7 -> 7 / 20 = 35 %.
    assert fpr_at_tpr(HAND_ID, HAND_OOD) == 20.0
    assert fpr_at_tpr_ood(HAND_ID, HAND_OOD) == 35.0
    m = summarize(HAND_ID, HAND_OOD)
    assert (m["fpr95"], m["fpr95_ood_pos"]) == (20.0, 35.0)
    # the OOD-positive rule is the ID-positive one with the roles swapped and the sign flipped
    assert fpr_at_tpr_ood(HAND_ID, HAND_OOD) == fpr_at_tpr(-HAND_OOD, -HAND_ID)


def test_the_other_way_round_and_at_other_rates():
    # ID 1..20, OOD 18.5, 19.5 and -1..-18: ID positive, threshold 2: OOD >= 2 are 18.5, 19.5 -> 10 %;
    # OOD positive: 19th smallest OOD score = 18.5, ID <= 18.5: 1..18 -> 90 %. At TPR 90% (18 of 20): ID positive
    # threshold 3 -> 10 %; OOD positive threshold -1 (the 18th smallest) -> no ID score below -> 0 %.
    s_ood = np.r_[[18.5, 19.5], -np.arange(1.0, 19.0)]
    assert (fpr_at_tpr(HAND_ID, s_ood), fpr_at_tpr_ood(HAND_ID, s_ood)) == (10.0, 90.0)
    assert (fpr_at_tpr(HAND_ID, s_ood, 0.9), fpr_at_tpr_ood(HAND_ID, s_ood, 0.9)) == (10.0, 0.0)


def test_ties_at_the_ood_threshold_count_as_rejected():
    # ID 1..20; OOD -1..-18 and two 5's. OOD positive: the 19th smallest OOD score is 5 (tied with the 20th); ID
    # scores <= 5 (the tie counts as rejected, as ID ties count as accepted in fpr95): 1..5 -> 25 % (20 % if the tie
    # were not counted). ID positive: threshold 2, OOD >= 2: the two 5's -> 10 %.
    s_ood = np.r_[-np.arange(1.0, 19.0), [5.0, 5.0]]
    assert fpr_at_tpr_ood(HAND_ID, s_ood) == 25.0
    assert fpr_at_tpr(HAND_ID, s_ood) == 10.0
    # every score equal: everything is rejected, so every ID sample is a false positive
    assert fpr_at_tpr_ood(np.full(3, 0.3), np.full(2, 0.3)) == 100.0
    assert fpr_at_tpr_ood([5.0, 6.0], [1.0, 2.0]) == 0.0 and fpr_at_tpr_ood([1.0, 2.0], [5.0, 6.0]) == 100.0


def test_rejects_bad_input_like_the_other_metrics():
    with pytest.raises(ValueError, match="ood_scores is empty"):
        fpr_at_tpr_ood([1.0], [])
    with pytest.raises(ValueError, match="non-finite"):
        fpr_at_tpr_ood([1.0, float("nan")], [0.0])
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr_ood([1.0], [0.0], tpr=95)


# ---------------------------------------------------------------------------------------------
# Against pytorch-ood and OpenOOD's rule
# ---------------------------------------------------------------------------------------------

def _random(seed, ties):
    rng = np.random.default_rng(seed)
    n_id, n_ood = int(rng.integers(1, 400)), int(rng.integers(1, 400))
    if ties:   # few distinct values: ties within and across the sets
        levels = int(rng.integers(2, 25))
        return rng.integers(0, levels, n_id) / 4 + 0.5, rng.integers(0, levels, n_ood) / 4
    return rng.normal(1.0, 1.0, n_id), rng.normal(-0.5, 1.7, n_ood)


def _pytorch_ood_inputs(s_id, s_ood):
    """pytorch-ood's convention: outlier scores (higher = more OOD, so ours negated), labels < 0 for OOD (the positive
    class), class labels >= 0 for ID."""
    scores = torch.tensor(np.r_[-s_id, -s_ood], dtype=torch.float64)
    labels = torch.tensor(np.r_[np.arange(len(s_id)) % 3, -np.ones(len(s_ood))], dtype=torch.long)
    return scores, labels


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_fpr95_ood_pos_is_pytorch_ood_fpr95tpr(seed, ties):
    """pytorch-ood 0.4 ``metrics.functional.fpr_at_tpr`` and ``OODMetrics``' ``FPR95TPR``: equal with and without
    ties (it groups tied scores at one threshold, as we do)."""
    s_id, s_ood = _random(seed, ties)
    scores, labels = _pytorch_ood_inputs(s_id, s_ood)
    ours = fpr_at_tpr_ood(s_id, s_ood)
    assert ours == pytest.approx(100 * float(ptood_fpr_at_tpr(scores, labels, 0.95)), abs=1e-9)
    got = OODMetrics().update(scores, labels).compute()
    assert ours == pytest.approx(100 * got["FPR95TPR"], abs=1e-9)
    assert auroc(s_id, s_ood) == pytest.approx(100 * got["AUROC"], abs=1e-9)   # AUROC: one number either way


def test_pytorch_ood_fpr95tpr_is_not_our_fpr95():
    """The naming hazard: the number pytorch-ood calls FPR95TPR is our fpr95_ood_pos, not our fpr95."""
    scores, labels = _pytorch_ood_inputs(HAND_ID, HAND_OOD)
    got = 100 * OODMetrics().update(scores, labels).compute()["FPR95TPR"]
    assert got == pytest.approx(35.0) and got != pytest.approx(fpr_at_tpr(HAND_ID, HAND_OOD))


def test_pytorch_ood_aupr_names_have_our_positive_classes():
    """pytorch-ood 0.4's AUPR-IN has ID positive (our aupr_in) and AUPR-OUT OOD positive (our aupr_out); its estimator
    is the trapezoidal area of the PR curve, ours the step-wise average precision, so the values are close, not
    equal. With 2,000 ID and 100 OOD scores the two positive classes are 40+ points apart."""
    rng = np.random.default_rng(7)
    s_id, s_ood = rng.normal(1.0, 1.0, 2000), rng.normal(-0.5, 1.0, 100)
    got = OODMetrics().update(*_pytorch_ood_inputs(s_id, s_ood)).compute()
    a_in, a_out = aupr_in(s_id, s_ood), aupr_out(s_id, s_ood)
    assert abs(a_in - a_out) > 40
    assert 100 * got["AUPR-IN"] == pytest.approx(a_in, abs=1.0)
    assert 100 * got["AUPR-OUT"] == pytest.approx(a_out, abs=1.0)


def _openood_fpr(s_id, s_ood, *, ood_positive=True, drop_intermediate=True):
    """OpenOOD's evaluator rule, from its definition: ``fpr[argmax(tpr >= 0.95)]`` of ``sklearn.metrics.roc_curve``
    (default ``drop_intermediate=True``) with OOD positive on ``-conf`` (since 2023-08-10), or, before, ID positive
    on ``conf``."""
    from sklearn.metrics import roc_curve

    conf = np.r_[s_id, s_ood]
    is_ood = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
    y, s = (is_ood, -conf) if ood_positive else (1 - is_ood, conf)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=drop_intermediate)
    return 100 * float(fpr[np.argmax(tpr >= 0.95)])


@pytest.mark.parametrize("seed", range(5))
def test_openood_rule_on_scores_without_ties(seed):
    s_id, s_ood = _random(seed, ties=False)
    assert fpr_at_tpr_ood(s_id, s_ood) == pytest.approx(_openood_fpr(s_id, s_ood), abs=1e-9)
    # OpenOOD before August 2023 (ID positive, the v1.5 tag's fpr_recall): our fpr95
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(_openood_fpr(s_id, s_ood, ood_positive=False), abs=1e-9)


def test_openood_rule_departs_under_ties_where_roc_curve_drops_a_point():
    """Outlier scores: OOD 100..116 and 10, 9, 8; ID 10, 9, 8 and -17..-1. The OOD-positive ROC runs through (TPR,
    FPR) = (17, 0), (18, 1), (19, 2), (20, 3) / 20 at thresholds 100, 10, 9, 8: a diagonal run. Ours (and every
    point kept): TPR first reaches 95 % at 9 -> FPR 10 %. ``roc_curve``'s default drops the collinear points at 10
    and 9, so OpenOOD's call reads the next one: 15 %."""
    u_ood = np.r_[np.arange(100.0, 117.0), [10.0, 9.0, 8.0]]
    u_id = np.r_[[10.0, 9.0, 8.0], np.arange(-17.0, 0.0)]
    s_id, s_ood = -u_id, -u_ood
    assert fpr_at_tpr_ood(s_id, s_ood) == 10.0
    assert _openood_fpr(s_id, s_ood, drop_intermediate=False) == pytest.approx(10.0)
    assert _openood_fpr(s_id, s_ood) == pytest.approx(15.0)


# ---------------------------------------------------------------------------------------------
# Near-/far-OOD averages
# ---------------------------------------------------------------------------------------------

SETS = ("n1", "f1", "f2")
#: FPR95 per (method, seed, set) by hand; the other metrics follow from it.
VALUES = {("ce", 0): (60.0, 20.0, 30.0), ("ce", 1): (70.0, 10.0, 50.0),
          ("greg", 0): (40.0, 5.0, 15.0), ("greg", 1): (44.0, 7.0, 9.0)}


def _per_seed(benchmark="toy", sets=SETS):
    rows = []
    for (m, seed), vals in VALUES.items():
        for o, v in zip(sets, vals):
            rows.append({"benchmark": benchmark, "method": m, "seed": seed, "scorer": "energy", "ood_set": o,
                         "fpr95": v, "auroc": 100 - v, "aupr_in": 50.0, "aupr_out": 50.0, "fpr95_ood_pos": v / 2})
        rows.append({"benchmark": benchmark, "method": m, "seed": seed, "scorer": "energy", "ood_set": "average",
                     "fpr95": np.mean(vals), "auroc": 100 - np.mean(vals), "aupr_in": 50.0, "aupr_out": 50.0,
                     "fpr95_ood_pos": np.mean(vals) / 2})
    return pd.DataFrame(rows)


def _accuracy():
    return tables.aggregate_accuracy(pd.DataFrame({"benchmark": "toy", "method": ["ce", "ce", "greg", "greg"],
                                                   "seed": [0, 1, 0, 1], "id_accuracy": [95.0, 94.0, 93.0, 94.0]}))


def test_group_averages_are_per_seed_means_then_mean_and_std_over_seeds():
    agg = tables.aggregate_metrics(_per_seed())
    g = aggregate.group_averages(agg, ["n1"]).set_index(["method", "ood_set", "seed"])["fpr95"]
    # ce: near = n1 = 60, 70 -> 65, sd sqrt(50); far = (20 + 30) / 2 = 25, (10 + 50) / 2 = 30 -> 27.5, sd sqrt(12.5)
    assert g[("ce", "near_average", "0")] == 60.0 and g[("ce", "far_average", "1")] == 30.0
    assert g[("ce", "near_average", "mean")] == 65.0 and g[("ce", "near_average", "std")] == pytest.approx(50 ** 0.5)
    assert g[("ce", "far_average", "mean")] == 27.5 and g[("ce", "far_average", "std")] == pytest.approx(12.5 ** 0.5)
    # greg far: (5 + 15) / 2 = 10, (7 + 9) / 2 = 8 -> 9 +- sqrt(2)
    assert g[("greg", "far_average", "mean")] == 9.0 and g[("greg", "far_average", "std")] == pytest.approx(2 ** 0.5)
    # every metric is averaged, not only fpr95
    h = aggregate.group_averages(agg, ["n1"]).set_index(["method", "ood_set", "seed"])
    assert h.loc[("ce", "far_average", "mean"), "fpr95_ood_pos"] == 13.75
    assert h.loc[("ce", "far_average", "mean"), "auroc"] == 72.5
    # one run (no seed column): the plain means
    one = aggregate.group_averages(_per_seed()[lambda f: f.seed == 0].drop(columns="seed"), ["f2"])
    assert one.set_index(["method", "ood_set"]).loc[("ce", "near_average"), "fpr95"] == 30.0
    assert one.set_index(["method", "ood_set"]).loc[("ce", "far_average"), "fpr95"] == 40.0
    assert aggregate.group_averages(agg, []).empty and aggregate.group_averages(agg, None).empty


def test_group_averages_refuse_unknown_sets_and_incomplete_runs():
    agg = tables.aggregate_metrics(_per_seed())
    with pytest.raises(ValueError, match="not OOD sets"):
        aggregate.group_averages(agg, ["cifar100"])
    short = _per_seed()
    short = short[~((short.method == "greg") & (short.seed == 1) & (short.ood_set == "f2"))]
    with pytest.raises(ValueError, match="far_average"):
        aggregate.group_averages(tables.aggregate_metrics(short), ["n1"])


def test_tables_show_near_and_far_after_the_average_and_metrics_csv_keeps_its_rows(tmp_path):
    agg = tables.aggregate_metrics(_per_seed())
    tables.write_tables(agg, _accuracy(), tmp_path, near=["n1"])
    md = (tmp_path / "fpr95.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["method", "scorer", "n1", "f1", "f2", "average",
                                                                  "near_average", "far_average"]
    assert "65.00 ± 7.07" in md and "27.50 ± 3.54" in md and "near-OOD sets (n1)" in md and "(f1, f2)" in md
    assert "near_average" in (tmp_path / "fpr95_ood_pos.tex").read_text()
    back = pd.read_csv(tmp_path / "metrics.csv")
    assert len(back) == len(agg) and set(back.ood_set) == {*SETS, "average"}
    # no near sets: no group columns
    tables.write_tables(agg, _accuracy(), tmp_path, near=[])
    assert "near_average" not in (tmp_path / "fpr95.md").read_text()


def test_summary_json_has_the_average_and_the_near_and_far_averages(tmp_path):
    agg = tables.aggregate_metrics(_per_seed())
    s = json.loads(tables.write_summary(agg, _accuracy(), tmp_path / "summary.json", near=["n1"]).read_text())
    ce = s["ce"]
    # average over all three sets: ce (60 + 20 + 30) / 3 = 36.67 and (70 + 10 + 50) / 3 = 43.33 -> 40
    assert ce["energy_fpr95"] == 40.0 and ce["energy_fpr95_ood_pos"] == 20.0 and ce["energy_auroc"] == 60.0
    assert ce["energy_near_fpr95"] == 65.0 and ce["energy_far_fpr95"] == 27.5
    assert ce["energy_near_fpr95_std"] == round(50 ** 0.5, 2) and ce["energy_far_fpr95_ood_pos"] == 13.75
    assert ce["energy_near_auroc"] == 35.0 and ce["id_accuracy"] == 94.5
    plain = tables.summary(agg, _accuracy(), near=[])
    assert "energy_near_fpr95" not in plain["ce"] and plain["ce"]["energy_fpr95"] == 40.0


def test_near_defaults_to_the_profile_named_by_the_benchmark_column():
    # benchmark "cifar10": profiles/cifar10.yaml names cifar100 near; the frame's other set (svhn) is far
    agg = tables.aggregate_metrics(_per_seed("cifar10", ("cifar100", "svhn", "textures")))
    assert tables.profile_near(agg) == ["cifar100"]
    s = tables.summary(agg, _accuracy())
    assert s["ce"]["energy_near_fpr95"] == 65.0 and s["ce"]["energy_far_fpr95"] == 27.5
    # a benchmark that is no profile, and a profile without the key: no split
    assert tables.profile_near(tables.aggregate_metrics(_per_seed())) == []
    assert tables.profile_near(tables.aggregate_metrics(_per_seed("imagenet"))) == []


# ---------------------------------------------------------------------------------------------
# The profiles' benchmark.near (OpenOOD v1.5's split) and its check
# ---------------------------------------------------------------------------------------------

#: OpenOOD v1.5 (README): CIFAR-10/100 near = the other CIFAR and TinyImageNet; ImageNet near = SSB-hard, NINCO, of
#: which our ImageNet profile has neither; the synthetic novel-objects set is near by construction (ood/synthetic.py).
NEAR = {"cifar10": ["cifar100"], "cifar100": ["cifar10"], "cifar10-offline": ["cifar100"],
        "cifar10-cpu": ["CIFAR-100 test (near-OOD)"], "imagenet": None, "synthetic": ["novel-objects"]}


def test_each_profile_names_openood_v15_near_sets():
    params = config.load_params()
    assert set(NEAR) == set(config.profiles(params))
    for profile, near in NEAR.items():
        bench = config.profile_params(params, profile)["benchmark"]
        assert bench.get("near") == near, profile
        if near:
            assert set(near) <= set(bench["ood"]), profile
    stage = report.stage_inputs("cifar10-cpu", params)
    assert stage.near == ["CIFAR-100 test (near-OOD)"]
    assert stage.far == ["Textures (DTD, 10 categories)", "Noise (synthetic)"]
    assert report.stage_inputs("imagenet", params).far == []


@pytest.mark.parametrize("near", [["svhn"], "cifar100", [["cifar100"]]])
def test_profile_check_refuses_a_near_set_that_is_no_ood_set(near):
    params = copy.deepcopy(config.load_params())
    params["profiles"]["cifar10-offline"]["benchmark"]["near"] = near
    with pytest.raises(config.ParamError, match=r"benchmark\.near=.*allowed: cifar100, textures-synthetic"):
        config.profile_params(params, "cifar10-offline")


def test_collect_names_a_runs_file_written_before_the_new_column(tmp_path):
    f = tmp_path / "results" / "toy" / "runs" / "ce.csv"
    f.parent.mkdir(parents=True)
    old = _per_seed()[lambda d: d.method == "ce"].drop(columns="fpr95_ood_pos").assign(id_accuracy=95.0)
    old.to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"ce\.csv has no column\(s\) fpr95_ood_pos.*rerun the evaluate"):
        report.collect("toy", ["ce"], tmp_path)
    old.assign(fpr95_ood_pos=1.0).to_csv(f, index=False)
    per_seed, _ = report.collect("toy", ["ce"], tmp_path)
    assert list(per_seed.columns)[-1] == "fpr95_ood_pos"
