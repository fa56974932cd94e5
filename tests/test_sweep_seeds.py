"""A sweep's per-seed table and its paired screens (ood.ablations.collect_seeds, paired_sweep), from a fake
``dvc exp show --json`` and fake committed results, against hand computations."""
from __future__ import annotations

import pytest

from ood import ablations, config

STEPS = "profiles/cifar10-cpu.yaml:cifar10-cpu.method.greg.steps_per_epoch"


def _entry(rev, name, steps):
    method = {} if steps is None else {"greg": {"steps_per_epoch": steps}}
    return {"rev": rev, "name": name,
            "data": {"rev": rev, "params": {"profiles/cifar10-cpu.yaml": {"data": {"cifar10-cpu": {"method": method}}}},
                     "metrics": {}}}


def _files(fprs: dict[str, list[float]], acc: dict[str, list[float]]):
    """metrics.csv and accuracy.csv as the tables stage writes them (with mean/std rows that must be skipped)."""
    m = ["benchmark,method,seed,scorer,ood_set,fpr95,auroc,aupr_in,aupr_out,fpr95_ood_pos"]
    for method, vs in fprs.items():
        for s, v in enumerate(vs):
            for o, off in (("Textures", 0.0), ("average", -1.0)):
                m.append(f"c,{method},{s},energy,{o},{v + off},90,90,90,{v}")
                m.append(f"c,{method},{s},msp,{o},99,50,50,50,99")
        m.append(f"c,{method},mean,energy,average,-5,0,0,0,0")
    a = ["benchmark,method,seed,id_accuracy"] + [f"c,{k},{s},{v}" for k, vs in acc.items() for s, v in enumerate(vs)]
    return {"results/cifar10-cpu/metrics.csv": "\n".join(m) + "\n",
            "results/cifar10-cpu/accuracy.csv": "\n".join(a + ["c,greg,mean,1"]) + "\n"}


def test_collect_seeds_reads_each_experiment_commit_and_its_knob():
    files = {"workspace": _files({"greg": [30, 32, 31], "energy_oe": [33, 34, 35]},
                                 {"greg": [80, 81, 82], "energy_oe": [80, 80, 80]}),
             "e400": _files({"greg": [20, 21, 22], "energy_oe": [25, 23, 26]},
                            {"greg": [78, 79, 77], "energy_oe": [79, 79, 79]}),
             "gone": {}}
    shown = [_entry("workspace", None, None),
             {**_entry("abc", "main", None), "experiments": [
                 {"revs": [_entry("e400", "ft-len-400", 400)], "name": "ft-len-400"},
                 {"revs": [_entry("gone", "ft-len-1000", 1000)], "name": "ft-len-1000"},   # failed: no results
                 {"revs": [_entry("other", "greg-weight-3", None)], "name": "greg-weight-3"}]}]
    read = lambda rev, path: files.get(rev, {}).get(path)
    t = ablations.collect_seeds(shown, STEPS, match="ft-len", default=40, read=read)
    assert list(t.columns) == ablations.SEED_COLUMNS
    assert sorted(set(zip(t.experiment, t.value))) == [("baseline", 40), ("ft-len-400", 400)]
    assert set(t.scorer) == {"energy"} and len(t) == 2 * 2 * 3 * 2          # values x methods x seeds x sets
    r = t[(t.value == 400) & (t.method == "greg") & (t.seed == 2) & (t.ood_set == "Textures")].iloc[0]
    assert (r.fpr95, r.id_accuracy) == (22.0, 77.0)

    p = ablations.paired_sweep(t, [("greg", "energy_oe"), ("greg_plus", "greg")])
    assert set(zip(p.a, p.b)) == {("greg", "energy_oe")}              # greg_plus did not run: left out
    at400 = p[(p.value == 400) & (p.ood_set == "Textures")].iloc[0]
    # d = [20-25, 21-23, 22-26] = [-5, -2, -4]: mean -11/3, std 1.528 (ddof 1), every seed below 0
    assert at400.mean_diff == pytest.approx(-11 / 3) and at400.std_diff == pytest.approx(1.5275, abs=1e-4)
    assert (at400.agree, at400.verdict) == (3, "lower")
    at40 = p[(p.value == 40) & (p.ood_set == "Textures")].iloc[0]
    # d = [-3, -2, -4]: mean -3, std 1: |mean| > std and all agree
    assert (at40.mean_diff, at40.std_diff, at40.verdict) == (-3.0, 1.0, "lower")
    with pytest.raises(config.ParamError, match="no experiment"):
        ablations.collect_seeds(shown, STEPS, match="nothing-", read=lambda rev, path: None)


def test_a_recipe_field_set_per_method_defaults_to_the_recipe():
    # cifar10-cpu's greg fine-tunes with its 'finetune' recipe: 40 steps per epoch unless the method sets it
    params = config.load_params()
    assert ablations.knob_default(STEPS, params) == params["profiles"]["cifar10-cpu"]["recipes"]["finetune"][
        "steps_per_epoch"]
    assert ablations.knob_default("profiles/cifar10-cpu.yaml:cifar10-cpu.method.energy_oe.steps_per_epoch",
                                  params) == params["profiles"]["cifar10-cpu"]["recipes"]["finetune_energy"][
        "steps_per_epoch"]
