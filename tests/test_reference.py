"""Tests of ood.reference: the papers' numbers, their provenance, and side-by-side tables."""

import math
import re

import pandas as pd
import pytest

from ood import benchmark, reference


@pytest.fixture(scope="module")
def ref():
    return reference.load_reference()


# ---------------------------------------------------------------- the CSV itself


def test_csv_loads_with_exact_columns_and_vocab(ref):
    assert tuple(ref.columns) == reference.COLUMNS
    assert set(ref["benchmark"]) <= set(reference.BENCHMARKS)
    assert set(ref["metric"]) <= set(reference.METRICS)
    assert set(ref["confidence"]) <= set(reference.CONFIDENCE)
    for _, row in ref.iterrows():
        allowed = set(reference.OOD_SETS[row["benchmark"]]) | ({"none"} if row["metric"] == "id_accuracy" else set())
        assert row["ood_set"] in allowed, dict(row)


def test_every_row_has_a_source(ref):
    pat = re.compile(r"^(https?://\S+|paper Table \S+, p\. \S+)$")
    assert ref["source"].map(lambda s: bool(pat.match(s))).all()


def test_values_are_percentages_and_only_placeholders_are_empty(ref):
    vals = ref["value"].dropna()
    assert ((vals >= 0) & (vals <= 100)).all()
    empty = ref[ref["value"].isna()]
    assert (empty["confidence"] == "unverified").all()
    assert empty["note"].str.contains("no table available yet").all()
    # BFM tables were not readable: BFM rows exist, but none carries a number
    bfm = ref[ref["paper"] == "bfm"]
    assert len(bfm) > 0 and bfm["value"].isna().all()


def test_rows_are_unique(ref):
    keys = ["paper", "table", "benchmark", "model", "train_method", "scorer", "ood_set", "metric"]
    assert not ref.duplicated(keys).any()


def test_paper_row_mapping_is_respected(ref):
    """OE is scored with MSP, Energy-OE with energy, GReg/GReg+ with energy (module docstring)."""
    expected = {"oe": "msp", "oe_inrc": "msp", "energy_oe": "energy", "energy_oe_inrc": "energy",
                "greg": "energy", "greg_plus": "energy", "dos": "abs", "dos_inrc": "abs"}
    for tm, sc in expected.items():
        got = set(ref.loc[ref["train_method"] == tm, "scorer"])
        assert got <= {sc}, (tm, got)
    assert reference.PAPER_ROWS["energy score with fine-tune"] == ("energy_oe", "energy")
    assert reference.PAPER_ROWS["outlier exposure"] == ("oe", "msp")


def _value(ref, **kw):
    m = pd.Series(True, index=ref.index)
    for k, v in kw.items():
        m &= ref[k] == v
    rows = ref[m]
    assert len(rows) == 1, (kw, len(rows))
    return rows.iloc[0]


ENERGY_README = [
    ("cifar10", "ce", "msp", 51.04), ("cifar10", "ce", "energy", 33.01), ("cifar10", "ce", "odin", 35.71),
    ("cifar10", "ce", "mahalanobis", 37.08), ("cifar10", "oe", "msp", 8.53), ("cifar10", "energy_oe", "energy", 3.32),
    ("cifar100", "ce", "msp", 80.41), ("cifar100", "ce", "energy", 73.60), ("cifar100", "ce", "odin", 74.64),
    ("cifar100", "ce", "mahalanobis", 54.64), ("cifar100", "oe", "msp", 58.10),
    ("cifar100", "energy_oe", "energy", 47.55),
]


@pytest.mark.parametrize("bench,tm,sc,v", ENERGY_README)
def test_energy_readme_numbers_verified(ref, bench, tm, sc, v):
    row = _value(ref, paper="energy", benchmark=bench, train_method=tm, scorer=sc, ood_set="average", metric="fpr95")
    assert row["value"] == pytest.approx(v)
    assert row["confidence"] == "verified"
    assert row["model"] == "wrn40_2"
    assert "github.com/wetliu/energy_ood" in row["source"]


GREG_SECONDARY = [
    ("cifar10", "resnet18_tv", "energy_oe", "fpr95", 11.14), ("cifar10", "resnet18_tv", "greg", "fpr95", 7.90),
    ("cifar10", "resnet18_tv", "energy_oe", "auroc", 97.53), ("cifar10", "resnet18_tv", "greg", "auroc", 97.95),
    ("cifar10", "wrn40_2", "energy_oe", "fpr95", 13.11), ("cifar10", "wrn40_2", "greg", "fpr95", 7.95),
    ("cifar10", "densenet101", "energy_oe", "fpr95", 11.26), ("cifar10", "densenet101", "greg", "fpr95", 7.93),
    ("cifar10", "unstated", "oe", "fpr95", 21.76), ("cifar10", "unstated", "oe_grad", "fpr95", 18.79),
    ("cifar10", "unstated", "energy_oe", "fpr95", 11.26), ("cifar10", "unstated", "energy_oe_grad", "fpr95", 7.93),
    ("cifar10", "unstated", "poem", "fpr95", 29.15), ("cifar10", "unstated", "poem_grad", "fpr95", 23.87),
    ("imagenet10", "densenet121", "energy_oe", "fpr95", 45.23),
    ("imagenet10", "densenet121", "energy_oe", "auroc", 88.63),
    ("imagenet10", "densenet121", "dos", "fpr95", 49.31), ("imagenet10", "densenet121", "dos", "auroc", 91.97),
    ("imagenet10", "densenet121", "greg", "fpr95", 47.26), ("imagenet10", "densenet121", "greg", "auroc", 90.13),
    ("imagenet10", "densenet121", "greg_plus", "fpr95", 35.08),
    ("imagenet10", "densenet121", "greg_plus", "auroc", 92.06),
]


@pytest.mark.parametrize("bench,model,tm,metric,v", GREG_SECONDARY)
def test_greg_numbers_are_secondary(ref, bench, model, tm, metric, v):
    row = _value(ref, paper="greg", benchmark=bench, model=model, train_method=tm, ood_set="average", metric=metric)
    assert row["value"] == pytest.approx(v)
    assert row["confidence"] == "secondary"


DOS_TABLE1 = [  # (train_method, scorer, ood_set, metric, value) read off DOS Table 1 (CIFAR-100)
    ("dos", "abs", "svhn", "fpr95", 13.1), ("dos", "abs", "average", "fpr95", 24.4),
    ("dos", "abs", "average", "auroc", 95.2),
    ("dos", "abs", "none", "id_accuracy", 75.5), ("dos_inrc", "abs", "average", "fpr95", 3.2),
    ("ce", "msp", "average", "fpr95", 83.0), ("ce", "energy", "textures", "auroc", 69.3),
    ("energy_oe", "energy", "places365", "fpr95", 53.2), ("oe", "msp", "isun", "fpr95", 48.6),
]


@pytest.mark.parametrize("tm,sc,s,metric,v", DOS_TABLE1)
def test_dos_table1_numbers_verified(ref, tm, sc, s, metric, v):
    row = _value(ref, paper="dos", benchmark="cifar100", model="densenet101", train_method=tm, scorer=sc,
                 ood_set=s, metric=metric)
    assert row["value"] == pytest.approx(v)
    assert row["confidence"] == "verified"
    assert row["table"] == "Table 1"


def test_dos_averages_are_means_of_the_six_sets(ref):
    """A transcription check: each printed average is the mean of the six printed values (within
    rounding), except rows whose note says the printed table itself disagrees ("AS PRINTED")."""
    dos = ref[(ref["paper"] == "dos") & ref["metric"].isin(["fpr95", "auroc"])]
    checked = 0
    for (tm, sc, metric), g in dos.groupby(["train_method", "scorer", "metric"]):
        per_set = g[g["ood_set"] != "average"]["value"]
        avg = g[g["ood_set"] == "average"].iloc[0]
        assert len(per_set) == 6
        if "AS PRINTED" in avg["note"]:
            continue
        assert per_set.mean() == pytest.approx(avg["value"], abs=0.1), (tm, sc, metric)
        checked += 1
    assert checked >= 40


# ---------------------------------------------------------------- validation errors


def _write(tmp_path, df):
    p = tmp_path / "ref.csv"
    df.to_csv(p, index=False)
    return p


def _good_row(**kw):
    row = dict(paper="x", source="paper Table 2, p. 7", table="Table 2", page="7", benchmark="cifar10",
               id_dataset="cifar10", model="wrn40_2", train_method="ce", scorer="msp", ood_set="svhn",
               metric="fpr95", value="12.5", confidence="verified", note="", protocol="greg-detect")
    row.update(kw)
    return row


def test_load_reference_accepts_a_good_file(tmp_path):
    df = reference.load_reference(_write(tmp_path, pd.DataFrame([_good_row()])))
    assert df["value"].tolist() == [12.5]


@pytest.mark.parametrize(
    "bad,msg",
    [
        (dict(metric="fpr90"), "metric"),
        (dict(benchmark="mnist"), "benchmark"),
        (dict(confidence="sure"), "confidence"),
        (dict(protocol="mine"), "protocol"),
        (dict(ood_set="inaturalist"), "ood_set"),
        (dict(ood_set="none"), "ood_set"),
        (dict(source=""), "source"),
        (dict(source="my notes"), "source"),
        (dict(value="abc"), "not a number"),
        (dict(value="101"), "outside"),
        (dict(value="-1"), "outside"),
        (dict(value=""), "empty value"),
        (dict(value="", confidence="unverified"), "empty value"),
    ],
)
def test_load_reference_rejects_bad_rows(tmp_path, bad, msg):
    with pytest.raises(ValueError, match=msg):
        reference.load_reference(_write(tmp_path, pd.DataFrame([_good_row(**bad)])))


def test_load_reference_rejects_wrong_columns(tmp_path):
    df = pd.DataFrame([_good_row()]).drop(columns=["note"])
    with pytest.raises(ValueError, match="columns"):
        reference.load_reference(_write(tmp_path, df))


def test_placeholder_row_is_accepted(tmp_path):
    row = _good_row(value="", confidence="unverified", note="no table available yet")
    df = reference.load_reference(_write(tmp_path, pd.DataFrame([row])))
    assert math.isnan(df["value"].iloc[0])


def test_reference_for_rejects_bad_benchmark_metric_and_column(ref):
    with pytest.raises(ValueError, match="benchmark"):
        reference.reference_for("cifar1000", ref=ref)
    with pytest.raises(ValueError, match="metric"):
        reference.reference_for("cifar10", metric="accuracy", ref=ref)
    with pytest.raises(ValueError, match="filter column"):
        reference.reference_for("cifar10", ref=ref, colour="red")


def test_reference_for_filters(ref):
    got = reference.reference_for("cifar10", "fpr95", ref=ref, paper="energy", train_method=["oe", "energy_oe"])
    assert sorted(got["value"]) == [3.32, 8.53]
    assert set(got["benchmark"]) == {"cifar10"} and set(got["metric"]) == {"fpr95"}


# ---------------------------------------------------------------- side_by_side / to_markdown


def _hand_ref():
    rows = [
        _good_row(train_method="ce", scorer="msp", ood_set="average", value="51.04", source="https://a"),
        _good_row(train_method="energy_oe", scorer="energy", ood_set="average", value="3.32", source="https://b"),
        _good_row(train_method="oe", scorer="msp", ood_set="average", value="8.53", source="https://c",
                  confidence="secondary"),
        _good_row(train_method="ce", scorer="msp", ood_set="average", metric="auroc", value="90.0"),
    ]
    df = pd.DataFrame(rows)
    df["value"] = df["value"].astype(float)
    return df


def _hand_ours():
    return pd.DataFrame({
        "benchmark": ["cifar10", "cifar10", "cifar10"],
        "method": ["ce", "Energy-OE", "greg"],
        "scorer": ["softmax", "energy", "energy"],
        "ood_set": ["average", "average", "average"],
        "fpr95": [50.00, 4.32, 7.0],
        "auroc": [91.5, 99.0, 98.0],
        "aupr_in": [90.0, 99.0, 98.0],
        "aupr_out": [90.0, 99.0, 98.0],
    })


def test_side_by_side_diff_and_not_run():
    out = reference.side_by_side(_hand_ours(), _hand_ref(), metric="fpr95")
    assert list(out.columns) == ["benchmark", "train_method", "scorer", "ood_set", "ours", "paper", "diff",
                                 "source", "confidence"]
    assert len(out) == 3  # the three fpr95 paper cells; our greg row has no paper number
    by = out.set_index("train_method")
    # "softmax" maps to msp, "Energy-OE" to energy_oe (aliases); diff = ours - paper
    assert by.loc["ce", "ours"] == pytest.approx(50.00)
    assert by.loc["ce", "diff"] == pytest.approx(50.00 - 51.04)
    assert by.loc["energy_oe", "diff"] == pytest.approx(4.32 - 3.32)
    assert by.loc["oe", "ours"] == reference.NOT_RUN
    assert math.isnan(by.loc["oe", "diff"])
    assert by.loc["oe", "confidence"] == "secondary" and by.loc["oe", "source"] == "https://c"


def test_side_by_side_other_metric_and_ours_only():
    out = reference.side_by_side(_hand_ours(), _hand_ref(), metric="auroc", include_ours_only=True)
    by = out.set_index("train_method")
    assert by.loc["ce", "diff"] == pytest.approx(91.5 - 90.0)
    assert math.isnan(by.loc["greg", "paper"]) and by.loc["greg", "ours"] == pytest.approx(98.0)
    assert len(out) == 3


def test_side_by_side_errors():
    with pytest.raises(ValueError, match="metric"):
        reference.side_by_side(_hand_ours(), _hand_ref(), metric="fpr90")
    dup = pd.concat([_hand_ref(), _hand_ref().iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="several rows"):
        reference.side_by_side(_hand_ours(), dup)
    with pytest.raises(ValueError, match="lacks columns"):
        reference.side_by_side(_hand_ours().drop(columns=["method"]), _hand_ref())


def test_side_by_side_with_the_real_table(ref):
    paper = reference.reference_for("cifar100", ref=ref, paper="energy")
    ours = pd.DataFrame({"benchmark": ["cifar100"], "method": ["ce"], "scorer": ["energy"], "ood_set": ["average"],
                         "fpr95": [70.0]})
    assert len(reference.side_by_side(ours, paper)) == 0  # the Energy README's protocol is not ours: nothing is paired
    out = reference.side_by_side(ours, paper, protocol="energy-readme")  # asked for explicitly
    assert len(out) == 6
    assert (out["ours"] == reference.NOT_RUN).sum() == 5
    row = out[out["scorer"] == "energy"].iloc[0]
    assert row["diff"] == pytest.approx(70.0 - 73.60)


def test_to_markdown():
    out = reference.side_by_side(_hand_ours(), _hand_ref())
    md = reference.to_markdown(out)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| benchmark | train_method |")
    assert set(lines[1].replace("|", "").split()) == {"---"}
    assert len(lines) == 2 + len(out)
    assert "| not run |" in md and "| -1.04 |" in md


# ---------------------------------------------------------------- ImageNet subsets


def test_imagenet_subsets_nested_and_well_formed():
    ten, twenty = benchmark.load_imagenet_subset("imagenet10"), benchmark.load_imagenet_subset("imagenet20")
    assert len(ten) == len(set(ten)) == 10 and len(twenty) == len(set(twenty)) == 20
    assert all(re.fullmatch(r"n\d{8}", w) for w in twenty)
    assert twenty[:10] == ten  # the seeded-permutation rule makes the subsets nested, labels kept
    with pytest.raises(ValueError, match="subset"):
        benchmark.load_imagenet_subset("imagenet100")


def test_side_by_side_pairs_ours_only_with_references_of_our_protocol():
    """Energy-OE, WRN-40-2, CIFAR-10, average FPR95: 3.32 in the Energy README (2,000 images x 10 draws) and 13.11
    in GReg (full sets): ours is paired with the GReg number only."""
    ref = pd.DataFrame([
        _good_row(train_method="energy_oe", scorer="energy", ood_set="average", value="3.32", protocol="energy-readme"),
        _good_row(train_method="energy_oe", scorer="energy", ood_set="average", value="13.11", protocol="greg-detect"),
    ])
    ref["value"] = ref["value"].astype(float)
    ours = pd.DataFrame({"benchmark": ["cifar10"], "method": ["energy_oe"], "scorer": ["energy"],
                         "ood_set": ["average"], "fpr95": [12.0], "auroc": [90.0], "aupr_in": [90.0],
                         "aupr_out": [90.0]})
    side = reference.side_by_side(ours, ref)
    assert side["paper"].tolist() == [13.11] and side["diff"].round(2).tolist() == [-1.11]
    with pytest.raises(ValueError, match="several rows"):
        reference.side_by_side(ours, ref, protocol=None)
    assert reference.side_by_side(ours, ref, protocol="energy-readme")["paper"].tolist() == [3.32]
    with pytest.raises(ValueError, match="protocol"):
        reference.side_by_side(ours, ref, protocol="mine")


def test_every_reference_row_names_its_protocol_and_profiles_see_only_ours():
    from ood import config

    ref = reference.load_reference()
    assert set(ref["protocol"]) <= set(reference.PROTOCOLS)
    assert set(ref.loc[ref.paper == "energy", "protocol"]) == {"energy-readme"}
    assert set(ref.loc[ref.paper == "greg", "protocol"]) == {"greg-detect"}
    params = config.load_params()
    prof, proto, rows = reference.for_profile(params, "synthetic")
    assert prof == "cifar10" and proto == reference.OUR_PROTOCOL and len(rows) > 0
    assert set(rows["protocol"]) == {reference.OUR_PROTOCOL} and set(rows["model"]) == {"wrn40_2"}
    assert 13.11 in rows["value"].tolist() and 3.32 not in rows["value"].tolist()
    params["profiles"]["cifar10"]["evaluate"]["protocol"] = "energy-readme"  # a profile evaluated the Energy code's way
    prof, proto, rows = reference.for_profile(params, "cifar10")
    assert proto == "energy-readme" and 3.32 in rows["value"].tolist() and 13.11 not in rows["value"].tolist()
