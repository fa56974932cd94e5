"""ood.length_study on a fabricated study: the per-seed table, the summary, the paired screens and the intervals,
checked against numbers computed here by hand (numpy), not through ood.screen; then the committed study of
cifar10-cpu (pipelines/cifar10-cpu-length/): its bytes against its lock, its run folders, the README's screens."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ood import config, length_study

PROFILE = "cifar10-cpu"
SETS = ["near", "far"]
SCORERS = ["energy", "msp"]
SEEDS = [0, 1, 2]
METHODS = ["energy_oe", "greg", "greg_plus"]
LENGTHS = {"energy_oe": [160, 640], "greg": [160, 640], "greg_plus": [160, 640]}


def _fpr(method: str, steps: int, seed: int, ood_set: str, scorer: str) -> float:
    """A made-up FPR95 with a known structure: GReg's penalty effect grows with length, the sampler's does not."""
    base = {"energy_oe": 60.0, "greg": 61.0, "greg_plus": 58.0}[method] + (1.0 if ood_set == "far" else 0.0)
    grow = {"energy_oe": 0.0, "greg": -0.01, "greg_plus": -0.01}[method] * (steps - 40)
    return base + grow + 0.3 * seed + (5.0 if scorer == "msp" else 0.0)


def _acc(method: str, steps: int, seed: int) -> float:
    return 80.0 - 0.002 * steps + 0.1 * seed + {"energy_oe": 0.0, "greg": -0.5, "greg_plus": -0.7}[method]


def _metrics(method: str, steps: int) -> pd.DataFrame:
    rows = []
    for s in SEEDS:
        for sc in SCORERS:
            vals = {o: _fpr(method, steps, s, o, sc) for o in SETS}
            vals["average"] = float(np.mean(list(vals.values())))
            for o, v in vals.items():
                rows.append({"benchmark": PROFILE, "method": method, "seed": s, "scorer": sc, "ood_set": o,
                             "fpr95": v, "auroc": 100 - v / 2, "aupr_in": 50.0, "aupr_out": 50.0,
                             "fpr95_ood_pos": v, "id_accuracy": _acc(method, steps, s)})
    return pd.DataFrame(rows)


@pytest.fixture
def study(tmp_path):
    root = tmp_path
    (root / "results" / PROFILE / "runs").mkdir(parents=True)
    iv = []
    for m in METHODS:
        _metrics(m, 40).to_csv(root / "results" / PROFILE / "runs" / f"{m}.csv", index=False)
        iv += [{"method": m, "seed": s, "scorer": sc, "ood_set": o, "fpr95": 1.0, "fpr95_lo": 0.5, "fpr95_hi": 1.5,
                "n_ood": 10} for s in SEEDS for sc in SCORERS for o in [*SETS, "average"]]
    pd.DataFrame(iv).to_csv(root / "results" / PROFILE / "fpr95_intervals.csv", index=False)
    runs = {}
    for m in METHODS:
        for L in LENGTHS[m]:
            key = f"{m}-{L}"
            runs[key] = {"method": m, "epochs": L // 160, "steps_per_epoch": 160}
            d = root / "runs" / PROFILE / "length" / key
            d.mkdir(parents=True)
            _metrics(m, L).to_csv(d / "metrics.csv", index=False)
            # what the run's evaluate stage writes beside its metrics: its rows named by the run folder
            pd.DataFrame([{"method": key, "seed": s, "scorer": sc, "ood_set": o, "fpr95": _fpr(m, L, s, o, sc),
                           "fpr95_lo": _fpr(m, L, s, o, sc) - 1.5, "fpr95_hi": _fpr(m, L, s, o, sc) + 2.5,
                           "n_ood": 30} for s in SEEDS for sc in SCORERS for o in [*SETS, "average"]]
                         ).to_csv(d / "intervals.csv", index=False)
    (root / "pipelines" / "study").mkdir(parents=True)
    (root / "pipelines" / "study" / "params.yaml").write_text(yaml.safe_dump({"length": runs}))
    return root


def test_collect_reads_every_length_seed_scorer_and_set(study):
    params = config.load_params()
    t = length_study.collect(params, PROFILE, "pipelines/study", study)
    assert sorted(t["value"].unique()) == [40, 160, 640]
    assert len(t) == len(METHODS) * 3 * len(SEEDS) * len(SCORERS) * (len(SETS) + 1)
    row = t[(t.method == "greg") & (t.value == 640) & (t.seed == 2) & (t.scorer == "energy") & (t.ood_set == "far")]
    assert row["fpr95"].item() == pytest.approx(_fpr("greg", 640, 2, "far", "energy"))
    assert row["experiment"].item() == "greg-640"
    assert set(t.loc[t.value == 40, "experiment"]) == {"profile"}


def test_summary_is_the_mean_and_std_over_the_seeds(study):
    t = length_study.collect(config.load_params(), PROFILE, "pipelines/study", study)
    s = length_study.summary(t)
    r = s[(s.method == "greg_plus") & (s.value == 160)]
    vals = [np.mean([_fpr("greg_plus", 160, seed, o, "energy") for o in SETS]) for seed in SEEDS]
    assert r["fpr95"].item() == pytest.approx(np.mean(vals))
    assert r["fpr95_std"].item() == pytest.approx(np.std(vals, ddof=1))
    accs = [_acc("greg_plus", 160, seed) for seed in SEEDS]
    assert r["id_accuracy"].item() == pytest.approx(np.mean(accs))


def test_screens_pair_by_seed_and_find_the_growth_that_was_built_in(study):
    t = length_study.collect(config.load_params(), PROFILE, "pipelines/study", study)
    p = length_study.screens(t)
    # the penalty at 640 steps: greg - energy_oe per seed, by hand
    d = [_fpr("greg", 640, s, "near", "energy") - _fpr("energy_oe", 640, s, "near", "energy") for s in SEEDS]
    r = p[(p.kind == "pair") & (p.a == "greg") & (p.b == "energy_oe") & (p.steps == 640) & (p.ood_set == "near")
          & (p.metric == "fpr95")]
    assert r["mean_diff"].item() == pytest.approx(np.mean(d))
    # growth of the penalty's effect from 40 to 640 steps: -0.01 * 600 = -6 points in every seed, no scatter
    g = p[(p.kind == "growth") & (p.a == "greg") & (p.b == "energy_oe") & (p.ood_set == "far")
          & (p.metric == "fpr95")]
    assert g["mean_diff"].item() == pytest.approx(-6.0)
    assert g[["steps", "steps_b"]].values.tolist() == [[640, 40]]
    # the sampler's effect (greg_plus - greg) does not grow: the same -3 at every length, so no clear difference
    gs = p[(p.kind == "growth") & (p.a == "greg_plus") & (p.b == "greg") & (p.metric == "fpr95")]
    assert (gs["mean_diff"].abs() < 1e-9).all() and (gs["verdict"] == "no clear difference").all()
    # ID accuracy over the span: -0.002 * 600 = -1.2 in every seed, agreeing in sign: "lower"
    a = p[(p.kind == "length") & (p.a == "energy_oe") & (p.metric == "id_accuracy")]
    assert a["mean_diff"].item() == pytest.approx(-1.2) and a["ood_set"].item() == "ID test"
    assert a["agree"].item() == 3


def test_export_writes_every_output_and_the_intervals_of_every_run(study, monkeypatch):
    params = config.load_params()
    params["profiles"][PROFILE]["benchmark"]["ood"] = {o: o for o in SETS}
    params["profiles"][PROFILE]["benchmark"].pop("average_over", None)
    params["profiles"][PROFILE]["benchmark"]["near"] = ["near"]
    tables = length_study.export(params, PROFILE, "pipelines/study", study)
    out = study / "results" / PROFILE / "sweeps"
    assert sorted(p.name for p in out.iterdir()) == sorted(length_study.OUTPUTS)
    iv = tables["intervals"]
    assert set(iv["steps"]) == {40, 160, 640}
    new = iv[iv.steps == 640]
    assert len(new) == len(METHODS) * len(SEEDS) * len(SCORERS) * (len(SETS) + 1)
    assert set(new["method"]) == set(METHODS)   # the run folders' names mapped back to their methods
    for r in new.itertuples():   # each row is its own run's, seed's, scorer's and set's
        want = _fpr(r.method, 640, r.seed, r.ood_set, r.scorer)
        assert (r.fpr95, r.fpr95_lo, r.fpr95_hi) == pytest.approx((want, want - 1.5, want + 2.5))
    assert "## Does the effect grow?" in (out / "length.md").read_text()


def test_a_misnamed_run_and_a_missing_evaluation_say_what_is_wrong(study):
    params_file = study / "pipelines" / "study" / "params.yaml"
    runs = yaml.safe_load(params_file.read_text())
    runs["length"]["greg-640"]["epochs"] = 2
    params_file.write_text(yaml.safe_dump(runs))
    with pytest.raises(config.ParamError, match="name it greg-320"):
        length_study.study_runs("pipelines/study", study)
    runs["length"]["greg-640"]["epochs"] = 4
    params_file.write_text(yaml.safe_dump(runs))
    (study / "runs" / PROFILE / "length" / "greg-640" / "metrics.csv").unlink()
    with pytest.raises(FileNotFoundError, match="evaluate@greg-640"):
        length_study.collect(config.load_params(), PROFILE, "pipelines/study", study)
    (study / "runs" / PROFILE / "length" / "greg-160" / "intervals.csv").unlink()
    with pytest.raises(FileNotFoundError, match="evaluate@greg-160"):
        length_study.intervals(config.load_params(), PROFILE, "pipelines/study", seeds=SEEDS, root=study)


# --- the committed study of cifar10-cpu (pipelines/cifar10-cpu-length/): consistency, not completeness ----------

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "pipelines" / "cifar10-cpu-length"
SWEEPS = ROOT / "results" / PROFILE / "sweeps"


def _study_lock() -> dict:
    f = STUDY / "dvc.lock"
    return yaml.safe_load(f.read_text())["stages"] if f.is_file() else {}


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_the_studys_committed_outputs_are_the_bytes_its_lock_recorded():
    """Every output of the study's lock that is in git (run folders, metrics, the export) has the recorded bytes."""
    import subprocess

    lock = _study_lock()
    if not lock:
        pytest.skip("the length study has not run a stage yet")
    for name, st in lock.items():
        for o in st.get("outs", []):
            path = ROOT / o["path"]
            tracked = subprocess.run(["git", "ls-files", o["path"]], cwd=ROOT, capture_output=True, text=True,
                                     check=True).stdout.split()
            if not tracked:
                continue    # DVC-cached
            if path.is_file():
                assert _md5(path) == o["md5"], f"{o['path']} is not what {name} wrote"
            else:
                assert sorted(p.relative_to(ROOT).as_posix() for p in path.rglob("*") if p.is_file()) == sorted(
                    tracked), f"{o['path']}: files beside what {name} wrote"


def test_each_run_fine_tuned_its_seed_for_its_length_and_kept_no_optimizer_state():
    """Every finished fine-tune of the study: one folder per seed of its lock, model.pt and history.csv only, the
    model's own configuration saying its method, seed, length and start (that seed's CE), each seed's weights its
    own and not the profile's 40-step run's."""
    import subprocess

    import torch

    lock = _study_lock()
    runs = length_study.study_runs("pipelines/cifar10-cpu-length", ROOT).set_index("key")
    done = [k.split("@", 1)[1] for k in lock if k.startswith("finetune@")]
    if not done:
        pytest.skip("no fine-tune of the study has run yet")
    for key in done:
        r = runs.loc[key]
        seeds = lock[f"finetune@{key}"]["params"]["pipelines/cifar10-cpu/params.yaml"]["seeds"]
        base = f"runs/{PROFILE}/length/{key}/seeds"
        files = subprocess.run(["git", "ls-files", base], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
        assert set(files) == {f"{base}/{s}/{f}" for s in seeds for f in ("model.pt", "history.csv")}, key
        weights = []
        for s in seeds:
            blob = torch.load(ROOT / base / str(s) / "model.pt", map_location="cpu", weights_only=True)
            cfg = blob["meta"]["config"]
            assert (cfg["method"], cfg["seed"], cfg["init"]) == (r.method, s, "ce"), key
            assert (cfg["epochs"], cfg["steps_per_epoch"]) == (r.epochs, r.steps_per_epoch), key
            hist = pd.read_csv(ROOT / base / str(s) / "history.csv")
            assert len(hist) == r.epochs, key
            weights.append(next(v for k, v in blob["state_dict"].items() if k.endswith("weight") and v.dim() == 4))
            profile_run = torch.load(ROOT / f"runs/{PROFILE}/{r.method}/seeds/{s}/model.pt", map_location="cpu",
                                     weights_only=True)["state_dict"]
            assert any(not torch.equal(v, profile_run[k]) for k, v in blob["state_dict"].items()
                       if v.is_floating_point()), f"{key} seed {s} equals the 40-step run"
        assert all(not torch.equal(weights[0], w) for w in weights[1:]), f"{key}: two seeds with one weight tensor"


def _readme_rows(tag: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {tag} -->\n(.*?)<!-- /", text, re.S)
    assert m, f"README.md has no block <!-- {tag} -->"
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in m.group(1).strip().splitlines()]
    return [r for r in rows[2:]]


def _by_hand(seeds: pd.DataFrame, a: str, la: int, b: str, lb: int, metric: str, ood_set: str = "average"):
    """mean, std (ddof 1), seeds agreeing in sign and the verdict of the per-seed a@la - b@lb, recomputed here."""
    t = seeds[(seeds.scorer == "energy") & (seeds.ood_set == ood_set)]
    va = t[(t.method == a) & (t.value == la)].set_index("seed")[metric]
    vb = t[(t.method == b) & (t.value == lb)].set_index("seed")[metric]
    d = (va - vb).dropna().to_numpy()
    return _rule(d)


def _rule(d: np.ndarray):
    mean, std = float(np.mean(d)), float(np.std(d, ddof=1))
    agree = int(np.sum(np.sign(d) == np.sign(mean)))
    clear = agree == len(d) and abs(mean) > std
    return mean, std, agree, len(d), ("lower" if mean < 0 else "higher") if clear else "no clear difference"


def test_the_readme_length_screens_are_the_per_seed_differences():
    """Each row of the README's length block, recomputed from length-seeds.csv with numpy: a pair at one length
    (``greg vs energy_oe`` at ``640``), the growth of a pair's difference (``growth: ...`` at ``640 vs 40``) on an OOD
    set, and a method against itself (``greg: ID accuracy`` / ``greg: FPR95`` at ``640 vs 40``)."""
    if not (SWEEPS / "length-seeds.csv").is_file():
        pytest.skip("the length study is not exported yet")
    seeds = pd.read_csv(SWEEPS / "length-seeds.csv")
    rows = _readme_rows("length:cifar10-cpu")
    assert len(rows) >= 10
    for comp, ood_set, steps, diff, agree, verdict in rows:
        m = re.fullmatch(r"([+-]?[\d.]+) ± ([\d.]+)", diff)
        o = "average" if ood_set == "ID test" else ood_set
        if comp.startswith("growth: "):
            a, b = comp[len("growth: "):].split(" vs ")
            hi, lo = (int(x) for x in steps.split(" vs "))
            t = seeds[(seeds.scorer == "energy") & (seeds.ood_set == o)]
            d = {L: (t[(t.method == a) & (t.value == L)].set_index("seed")["fpr95"]
                     - t[(t.method == b) & (t.value == L)].set_index("seed")["fpr95"]) for L in (hi, lo)}
            got = _rule((d[hi] - d[lo]).dropna().to_numpy())
        elif ": " in comp:
            method, what = comp.split(": ")
            hi, lo = (int(x) for x in steps.split(" vs "))
            got = _by_hand(seeds, method, hi, method, lo, "id_accuracy" if what == "ID accuracy" else "fpr95", o)
        else:
            a, b = comp.split(" vs ")
            got = _by_hand(seeds, a, int(steps), b, int(steps), "fpr95", o)
        assert float(m.group(1)) == pytest.approx(got[0], abs=0.006), (comp, ood_set, steps)
        assert float(m.group(2)) == pytest.approx(got[1], abs=0.006), (comp, ood_set, steps)
        assert agree == f"{got[2]} of {got[3]}" and verdict == got[4], (comp, ood_set, steps)


def test_the_readme_says_which_stages_of_the_study_are_done():
    """The README's status block of the study lists each of its stages under the state DVC gives it (the classifier
    of tests/test_cifar10_cpu.py, on this pipeline): what ran, what is cached, what is stale or not run."""
    from test_cifar10_cpu import _dvc_states

    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- status:cifar10-cpu-length -->\n(.*?)<!-- /status -->", text, re.S)
    assert m, "README.md has no status block of the length study"
    rows = dict(re.findall(r"^\| ([a-z ]+) \| (.+) \|$", m.group(1), re.M))
    rows.pop("state", None)
    listed = {name: state for state, names in rows.items() for name in re.findall(r"`([^`]+)`", names)}
    assert listed == _dvc_states(STUDY), "the README's status block of the study is out of date: python -m " \
                                         "ood.budget --status pipelines/cifar10-cpu-length/dvc.yaml prints it"


def test_the_readme_answers_on_the_length_hold():
    """The bootstrap-interval claims of the README's three answers, recomputed from length-intervals.csv, and the
    numbers they quote, found in length-paired.csv and length.csv."""
    if not (SWEEPS / "length-intervals.csv").is_file():
        pytest.skip("the length study is not exported yet")
    iv = pd.read_csv(SWEEPS / "length-intervals.csv")
    iv = iv[(iv.scorer == "energy") & (iv.steps == 640)]
    tex, c100 = "Textures (DTD, 10 categories)", "CIFAR-100 test (near-OOD)"

    def disjoint(a, b, ood_set):
        ta = iv[(iv.method == a) & (iv.ood_set == ood_set)].set_index("seed")
        tb = iv[(iv.method == b) & (iv.ood_set == ood_set)].set_index("seed")
        return sum(int(ta.fpr95_hi[s] < tb.fpr95_lo[s] or tb.fpr95_hi[s] < ta.fpr95_lo[s]) for s in ta.index)

    assert disjoint("greg", "energy_oe", tex) == 3 and disjoint("greg", "energy_oe", c100) == 2
    assert disjoint("greg_plus", "greg", tex) == 0 and disjoint("greg_plus", "greg", c100) == 0
    span = lambda m, o: (iv[(iv.method == m) & (iv.ood_set == o)].fpr95.min(),
                         iv[(iv.method == m) & (iv.ood_set == o)].fpr95.max())
    assert [round(x, 1) for x in span("greg", tex)] == [38.5, 41.9]
    assert [round(x, 1) for x in span("energy_oe", tex)] == [45.6, 48.1]
    # every "x ± y" the answers quote is a screen of length-paired.csv
    text = (ROOT / "README.md").read_text()
    answers = text[text.index("- **Does the penalty's effect grow with length?"):
                   text.index("![FPR95 and ID accuracy against")]
    paired = pd.read_csv(SWEEPS / "length-paired.csv")
    known = {(f"{r.mean_diff:+.2f}".lstrip("+"), f"{r.std_diff:.2f}") for r in paired.itertuples()}
    quoted = re.findall(r"([+-]?\d+\.\d\d) ± (\d+\.\d\d)", answers)
    assert quoted and all((m.lstrip("+"), s) in known for m, s in quoted), [q for q in quoted
                                                                           if (q[0].lstrip("+"), q[1]) not in known]
    summ = pd.read_csv(SWEEPS / "length.csv").set_index(["method", "value"])
    assert [round(summ.loc[(m, 640), "id_accuracy"], 1) for m in ("energy_oe", "greg", "greg_plus")] == [77.1, 76.0,
                                                                                                         75.8]
    lengths = paired[(paired.kind == "length") & (paired.metric == "fpr95")].set_index(["a", "ood_set"])
    assert sorted(round(lengths.loc[(m, tex), "mean_diff"]) for m in ("energy_oe", "greg", "greg_plus")) == [-29, -26,
                                                                                                            -15]
    assert all(lengths.loc[(m, tex), "agree"] == 3 for m in ("energy_oe", "greg", "greg_plus"))
    assert sorted(round(lengths.loc[(m, "Noise (synthetic)"), "mean_diff"]) for m in ("energy_oe", "greg",
                                                                                      "greg_plus")) == [29, 37, 48]
