"""The real-data CPU profile: profiles/cifar10-cpu.yaml, its pipeline (pipelines/cifar10-cpu/) and its committed
results.

* the profile and its pipeline's params load, and every method's configuration builds;
* every method trains a few steps on small subsets of the profile's real sets (CIFAR-10, TinyImageNet-32, Textures
  DTD-10 from ../shared/data), and every scorer scores it;
* the committed results are complete and consistent (every method x scorer x set, two or more seeds, the averages
  are the means of their sets, the aggregate rows the mean and std of the seeds) and are the bytes the DVC lock of
  the profile's pipeline recorded (so they came out of `dvc repro pipelines/cifar10-cpu/dvc.yaml`, not an edit).
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ood import config, data
from ood.data import fetching
from ood.scorers import SCORERS, profile_scorers

ROOT = Path(__file__).resolve().parents[1]
PIPE = ROOT / "pipelines" / "cifar10-cpu"
PROFILE = "cifar10-cpu"
RES = ROOT / "results" / PROFILE


@pytest.fixture(scope="module")
def params():
    return config.load_params(PIPE / "params.yaml")


def test_the_profile_has_its_own_pipeline_on_the_shared_dvc_yaml(params):
    assert params["profile"] == PROFILE
    # a copy (a symlink would be simpler, but DVC reads a symlinked dvc.yaml in a git revision as the link's text, so
    # `dvc exp show` and `dvc metrics diff` failed on every commit), with the run folders of the train and fine-tune
    # stages committed to git (`cache: false`): undoing those two marks gives dvc.yaml back, byte for byte
    text = (PIPE / "dvc.yaml").read_text()
    marked = re.findall(r"^( +)- (runs/\$\{profile\}/\$\{(?:item|key)\}/seeds):\n\1    cache: false\n", text, re.M)
    assert len(marked) == 2, "pipelines/cifar10-cpu/dvc.yaml: the train and fine-tune run folders must be cache: false"
    undone = re.sub(r"^( +- runs/\$\{profile\}/\$\{(?:item|key)\}/seeds):\n +cache: false\n", r"\1\n", text, flags=re.M)
    assert undone == (ROOT / "dvc.yaml").read_text(), \
        "pipelines/cifar10-cpu/dvc.yaml must be dvc.yaml with its two run-folder outs marked `cache: false`"
    stages = yaml.safe_load(text)["stages"]
    for stage in ("train", "finetune"):
        outs = stages[stage]["do"]["outs"]
        assert {"runs/${profile}/${%s}/seeds" % ("item" if stage == "train" else "key"): {"cache": False}} in outs
    assert (PIPE / params["root"]).resolve() == ROOT  # the stages run at the repository root
    assert (ROOT / params["params_file"]).resolve() == (PIPE / "params.yaml").resolve()
    assert len(params["seeds"]) >= 3, "the paired screens count the seeds whose signs agree (>= 3 seeds)"
    root = config.load_params(ROOT / "params.yaml")
    assert root["profile"] == "synthetic", "the default `dvc repro` runs the synthetic profile"
    methods = params["pipeline"]["evaluate"]
    assert (len(methods) == 9
            and set(methods) == set(params["pipeline"]["scratch"]) | set(params["pipeline"]["finetune"]))
    for m in methods:
        cfg = config.method_config(params, m, PROFILE)
        assert (cfg.init is None) == (m in params["pipeline"]["scratch"]), m
    # every registered scorer (issue 41: the narrowing to 14 goes)
    assert profile_scorers(params["profiles"][PROFILE]) == list(SCORERS)


def _shared_data_or_skip():
    shared = fetching.SHARED_DATA
    needed = [shared / "cifar-10-batches-py" / "test_batch.xz", shared / "tinyimagenet32-train.tar.xz",
              shared / "dtd10-32.tar.xz", shared / "cifar-100-python" / "test.xz"]
    if not all(p.is_file() for p in needed):
        pytest.skip(f"the real sets of the cifar10-cpu profile are not beside the checkout ({shared})")


@pytest.mark.slow
def test_every_method_trains_a_few_steps_on_real_subsets_and_every_scorer_scores(params, tmp_path):
    """Two steps of each of the nine methods (fine-tunes from the tiny CE/BFM runs), each scored by the energy score;
    the last one by every scorer of the profile (the scorers do not depend on the method that trained the network)."""
    _shared_data_or_skip()
    from ood.benchmark import load_benchmark
    from ood.config import model_spec
    from ood.evaluate import evaluate
    from ood.models import load_model
    from ood.train import train

    p = copy.deepcopy(params)
    p["profiles"][PROFILE]["benchmark"]["sizes"] = {"train": 512, "test": 256, "ood": 200, "aux": 512}
    bench = load_benchmark(p, PROFILE)   # the checkout's data root (git-ignored): unpacked once, as gpu_check's
    assert set(bench.ood) == set(params["profiles"][PROFILE]["benchmark"]["ood"])
    assert bench.id_train.images.shape == (512, 3, 32, 32) and len(set(bench.id_train.labels.tolist())) == 10
    assert bench.aux.images.shape == (512, 3, 32, 32) and all(len(v) == 200 for v in bench.ood.values())
    spec = model_spec(p, PROFILE)
    order = params["pipeline"]["scratch"] + list(params["pipeline"]["finetune"])
    scorers = {n: params["profiles"][PROFILE]["evaluate"].get("params", {}).get(n, {})
               for n in profile_scorers(params["profiles"][PROFILE])}
    for m in order:
        # the energy score on every method's network, every scorer on the last one
        scoring = scorers if m == order[-1] else {"energy": scorers["energy"]}
        # two epochs of one step: BFM's background term starts after its warm-up epoch
        cfg = config.method_config(p, m, PROFILE, epochs=2, steps_per_epoch=1, seed=0)
        run = tmp_path / m
        init = tmp_path / cfg.init if cfg.init else None
        hist = train(cfg, spec, bench.id_train, run, aux=bench.aux, id_test=bench.id_test, init_dir=init,
                     device="cpu", progress=False)
        losses = hist[[c for c in hist.columns if c.startswith("loss_")]]
        assert len(hist) == 2 and losses.shape[1] >= 1 and np.isfinite(losses.to_numpy()).all(), m
        res = evaluate(load_model(run, "cpu"), id_train=bench.id_train, id_test=bench.id_test, ood_sets=bench.ood,
                       scorers=scoring, benchmark=PROFILE, method=m, device="cpu", batch_size=128, progress=False)
        assert set(res.metrics.scorer) == set(scoring) and set(res.metrics.ood_set) == set(bench.ood) | {"average"}
        vals = res.metrics[["fpr95", "auroc", "aupr_in", "aupr_out"]]
        assert vals.notna().all().all() and ((vals >= 0) & (vals <= 100)).all().all(), m


# --- the committed results ------------------------------------------------------------------------------------

def _lock():
    return yaml.safe_load((PIPE / "dvc.lock").read_text())["stages"]


def test_the_lock_records_every_stage_of_the_profile(params):
    stages = _lock()
    p = params["pipeline"]
    want = ({"data", "tables", "figures"} | {f"train@{m}" for m in p["scratch"]}
            | {f"finetune@{m}" for m in p["finetune"]} | {f"evaluate@{m}" for m in p["evaluate"]})
    assert set(stages) == want
    for name, st in stages.items():
        assert f"-p profile {PROFILE}" in st["cmd"] and f"OOD_PARAMS={params['params_file']}" in st["cmd"], name


def test_the_committed_results_are_the_bytes_the_lock_recorded():
    """md5 of every committed (uncached) output, computed here with hashlib, against the lock's."""
    checked = 0
    for name, st in _lock().items():
        for out in st.get("outs", []):
            path = ROOT / out["path"]
            if out["path"].startswith(("results/", "figures/")) and "md5" in out and not out["md5"].endswith(".dir"):
                assert path.is_file(), f"{out['path']} (an output of {name}) is not committed"
                assert hashlib.md5(path.read_bytes()).hexdigest() == out["md5"], f"{out['path']} differs from the lock"
                checked += 1
    assert checked >= 30


def test_the_committed_results_are_complete_and_consistent(params):
    m = pd.read_csv(RES / "metrics.csv", dtype={"seed": str})
    methods = params["pipeline"]["evaluate"]
    scorers = profile_scorers(params["profiles"][PROFILE])
    sets = list(params["profiles"][PROFILE]["benchmark"]["ood"])
    seeds = [str(s) for s in params["seeds"]]
    assert set(m.method) == set(methods) and set(m.scorer) == set(scorers) and set(m.ood_set) == set(sets) | {"average"}
    assert set(m.seed) == set(seeds) | {"mean", "std"}
    assert len(m) == len(methods) * len(scorers) * (len(sets) + 1) * (len(seeds) + 2)
    assert not m.duplicated(["method", "scorer", "ood_set", "seed"]).any()
    cols = ["fpr95", "auroc", "aupr_in", "aupr_out"]
    runs = m[m.seed.isin(seeds)]
    assert runs[cols].notna().all().all() and runs[cols].apply(lambda c: c.between(0, 100)).all().all()
    # the average row of each (method, scorer, seed) is the mean of its sets (2-decimal rounding of 4 numbers)
    avg = runs[runs.ood_set == "average"].set_index(["method", "scorer", "seed"])[cols]
    per = runs[runs.ood_set != "average"].groupby(["method", "scorer", "seed"])[cols].mean()
    assert ((avg - per.loc[avg.index]).abs() <= 0.01).all().all()
    # the mean and std rows are those of the seeds (numpy here; tolerance: the CSV's 2-decimal rounding)
    key = ["method", "scorer", "ood_set"]
    n = len(seeds)
    g = runs.groupby(key)["fpr95"]
    mean = m[m.seed == "mean"].set_index(key)["fpr95"]
    std = m[m.seed == "std"].set_index(key)["fpr95"]
    assert ((mean - g.apply(np.mean).loc[mean.index]).abs() <= 0.01).all()
    assert ((std - g.apply(lambda v: np.std(v, ddof=1)).loc[std.index]).abs()
            <= 0.005 * (1 + (n / (n - 1)) ** 0.5)).all()


def test_ce_history_is_its_lock_entrys_run_and_learns():
    """CE's published history has one row per seed and epoch of the run its lock entry recorded (the seeds and the
    scratch recipe's epochs it ran with, not today's params: a partly run profile is consistent, not complete), and
    each seed ends above 75% test accuracy (a working CNN on CIFAR-10; the README's table has the exact figures)."""
    lock = _lock()["train@ce"]["params"]
    seeds = lock["pipelines/cifar10-cpu/params.yaml"]["seeds"]
    epochs = lock[f"profiles/{PROFILE}.yaml"][f"{PROFILE}.recipes"]["scratch"]["epochs"]
    hist = pd.read_csv(RES / "history" / "ce.csv")
    assert sorted(set(hist.seed)) == sorted(seeds) and len(hist) == len(seeds) * epochs
    last = hist[hist.epoch == epochs].set_index("seed")["test_accuracy"]
    assert (last > 75).all(), last.to_dict()


def test_fit_set_is_the_whole_id_train_or_a_seeded_subset_of_fit_size():
    import torch

    from ood.benchmark import fit_set

    imgs = torch.arange(50 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(50, 3, 4, 4)
    ds = data.ArrayDataset("toy", imgs, torch.arange(50))
    assert fit_set(ds, {}) is ds and fit_set(ds, {"fit_size": None}) is ds
    sub = fit_set(ds, {"fit_size": 20}, data_seed=3)
    # oracle: the first 20 of torch's seeded permutation, in their original order
    want = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:20].sort().values
    assert torch.equal(sub.labels, want) and torch.equal(sub.images, imgs[want])
    for bad in (0, 51, 2.5, True, "10"):
        with pytest.raises(config.ParamError, match="'evaluate.fit_size'; allowed: null"):
            fit_set(ds, {"fit_size": bad})


@pytest.mark.slow
def test_seed_workers_run_the_seeds_in_one_thread_processes_with_the_bits_of_a_one_thread_run(tmp_path):
    """``seed_workers: 2`` trains two seeds side by side; each must be exactly what a 1-thread process trains alone
    (oracle: a separate `python` with OOD_THREADS=1 and seed_workers 1)."""
    import io
    import subprocess
    import sys

    from ood import run_train

    params = config.load_params(ROOT / "params.yaml")
    params["seed_workers"] = 2
    cfg = config.method_config(params, "ce", "synthetic", epochs=1, steps_per_epoch=2)
    h1 = run_train.train_method(params, "synthetic", cfg, device="cpu", run_dir=tmp_path / "a", seeds=[0, 1],
                                progress=False)
    cols = ["seed", "epoch", "loss_ce", "train_accuracy", "test_accuracy"]
    code = ("import json, sys; from ood import config, run_train; p = config.load_params(); p['seed_workers'] = 1; "
            "c = config.method_config(p, 'ce', 'synthetic', epochs=1, steps_per_epoch=2); "
            "h = run_train.train_method(p, 'synthetic', c, device='cpu', run_dir=sys.argv[1], seeds=[0, 1], "
            "progress=False); "
            f"print(h[{cols!r}].to_csv(index=False, float_format='%.17g'))")
    env = {**os.environ, "OOD_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    one_thread = pd.read_csv(io.StringIO(out[out.index("seed,epoch"):]))
    np.testing.assert_array_equal(h1[cols].to_numpy(), one_thread[cols].to_numpy())
    for s in (0, 1):
        assert (tmp_path / "a" / "seeds" / str(s) / "model.pt").is_file()


def _readme_block(tag: str, page: str = "README.md") -> str:
    """The ``<!-- tag -->`` block of README.md, or of another page (``docs/real-data.md``)."""
    text = (ROOT / page).read_text()
    start = text.index(f"<!-- {tag} -->")
    return text[start:text.index("<!-- /", start)]


def test_the_readme_table_quotes_the_committed_results(params):
    """The README's real-data table: ID accuracy and the energy score's FPR95 per set, mean ± std over the seeds,
    recomputed here from results/cifar10-cpu/metrics.csv and accuracy.csv."""
    import re

    m = pd.read_csv(RES / "metrics.csv", dtype={"seed": str})
    acc = pd.read_csv(RES / "accuracy.csv", dtype={"seed": str}).set_index(["method", "seed"])["id_accuracy"]
    sets = list(params["profiles"][PROFILE]["benchmark"]["ood"]) + ["average"]
    e = m[m.scorer == "energy"].set_index(["method", "ood_set", "seed"])["fpr95"]
    block = _readme_block("results:cifar10-cpu")
    header = re.search(r"^\| method \| ID acc\. \| (.*) \|$", block, re.M).group(1).split(" | ")
    assert header == sets
    rows = re.findall(r"^\| (\w+) \| (.*) \|$", block, re.M)
    rows = [(meth, cells.split(" | ")) for meth, cells in rows if meth != "method"]
    assert [r[0] for r in rows] == params["pipeline"]["evaluate"]
    fmt = lambda mean, std: f"{mean:.1f} ± {std:.1f}"
    for meth, cells in rows:
        want = [fmt(acc[(meth, "mean")], acc[(meth, "std")])]
        want += [fmt(e[(meth, s, "mean")], e[(meth, s, "std")]) for s in sets]
        assert cells == want, meth


def test_the_readme_findings_are_the_committed_findings():
    """The per-set findings table of docs/real-data.md (moved there from the README's real-data section)."""
    import re

    found = pd.read_csv(RES / "findings.csv").set_index(["a", "b", "ood_set"])
    block = _readme_block("findings:cifar10-cpu", "docs/real-data.md")
    rows = re.findall(r"^\| (\w+) vs (\w+) \| ([^|]+) \| (-?[\d.]+) \| ([\d.]+) \| ([a-z ]+) \|$", block, re.M)
    assert len(rows) >= 8
    for a, b, ood_set, diff, spread, verdict in rows:
        r = found.loc[(a, b, ood_set.strip())]
        assert (float(diff), float(spread), verdict) == (round(r["diff"], 2), round(r.std_a + r.std_b, 2),
                                                         r.verdict), (a, b)


PAIRED = [("oe", "ce"), ("energy_oe", "ce"), ("greg", "energy_oe"), ("greg_plus", "greg"),
          ("energy_oe_sampling", "energy_oe"), ("oe_grad", "oe")]   # each pair fine-tunes the same CE checkpoint
TEX, C100, NOISE = "Textures (DTD, 10 categories)", "CIFAR-100 test (near-OOD)", "Noise (synthetic)"


def _per_seed_diff(a, b, ood_set, scorer="energy"):
    """FPR95 of a minus b, seed by seed, from the per-run CSVs (not from ood.screen, whose output is checked)."""
    runs = {}
    for m in (a, b):
        t = pd.read_csv(RES / "runs" / f"{m}.csv")
        runs[m] = t[(t.scorer == scorer) & (t.ood_set == ood_set)].set_index("seed")["fpr95"]
    assert len(runs[a]) >= 3 and sorted(runs[a].index) == sorted(runs[b].index)
    return runs[a] - runs[b].loc[runs[a].index]


def _paired(a, b, ood_set):
    """(mean, std, seeds agreeing with the mean's sign, verdict) of the per-seed differences, as the README rounds."""
    d = _per_seed_diff(a, b, ood_set)
    same = int((np.sign(d) == np.sign(d.mean())).sum())
    clear = same == len(d) and abs(d.mean()) > d.std(ddof=1)
    return (round(d.mean(), 2), round(d.std(ddof=1), 2), same,
            ("lower" if d.mean() < 0 else "higher") if clear else "no clear difference")


def test_the_readme_paired_screens_are_the_per_seed_differences():
    """The README's paired table (energy score, average FPR95): mean and std of the per-seed differences, the seeds
    whose sign agrees with the mean's, and the verdict (every seed agrees and |mean| > std), recomputed here."""
    import re

    block = _readme_block("screens:cifar10-cpu")
    rows = re.findall(r"^\| (\w+) vs (\w+) \| (-?[\d.]+) ± ([\d.]+) \| (\d+) of (\d+) \| ([a-z ]+) \|$", block, re.M)
    assert [(a, b) for a, b, *_ in rows] == PAIRED
    seeds = _lock()["tables"]["params"]["pipelines/cifar10-cpu/params.yaml"]["seeds"]
    for a, b, mean, std, agree, n, verdict in rows:
        assert int(n) == len(seeds), (a, b)
        assert (float(mean), float(std), int(agree), verdict) == _paired(a, b, "average"), (a, b)


def test_the_readme_answers_on_the_real_data_hold():
    """The four answers under the README's paired table, and its last bullet, against the committed CSVs."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("What they answer"):text.index("What differs from the papers: a 158K")]
    # GReg vs Energy-OE, paired: higher on the average and on CIFAR-100; Textures unclear (2 of 3)
    assert _paired("greg", "energy_oe", "average") == (5.51, 5.47, 3, "higher")
    assert _paired("greg", "energy_oe", C100) == (2.36, 0.84, 3, "higher")
    assert _paired("greg", "energy_oe", TEX)[2:] == (2, "no clear difference")
    assert "(+5.51 ± 5.47)" in section and "(+2.36 ± 0.84)" in section
    iv = pd.read_csv(RES / "fpr95_intervals.csv")
    w = iv[(iv.scorer == "energy") & iv.method.isin(["energy_oe", "greg", "greg_plus"]) & (iv.ood_set == TEX)]
    widths = (w.fpr95_hi - w.fpr95_lo).round(1)
    assert (widths.min(), widths.max()) == (5.6, 6.8) and "5.6 to 6.8 points" in section
    # GReg+ vs GReg: lower on the average and on noise; no clear difference on the real sets
    assert _paired("greg_plus", "greg", "average") == (-6.37, 5.30, 3, "lower")
    assert _paired("greg_plus", "greg", NOISE) == (-20.08, 12.39, 3, "lower")
    assert all(_paired("greg_plus", "greg", o)[3] == "no clear difference" for o in (C100, TEX))
    assert _paired("energy_oe_sampling", "energy_oe", C100) == (2.70, 0.85, 3, "higher")
    assert _paired("energy_oe_sampling", "energy_oe", TEX) == (7.19, 2.15, 3, "higher")
    # BFM vs CE under every scorer (unpaired, average): lower under energy, DICE, GEN; higher under Mahalanobis, ViM
    ph = pd.read_csv(RES / "findings_posthoc.csv")
    under = ph[ph.comparison.str.startswith("bfm vs ce under") & (ph.ood_set == "average")].set_index("scorer_a")
    assert sorted(under.index[under.verdict == "lower"]) == ["dice", "energy", "gen"]
    assert sorted(under.index[under.verdict == "higher"]) == ["mahalanobis", "vim"]
    assert (under.verdict == "no clear difference").sum() == 15 and under.loc["knn", "verdict"] == "no clear difference"
    for sc, a_, b_ in (("energy", 66.6, 84.2), ("mahalanobis", 76.6, 55.9), ("vim", 54.5, 48.7), ("knn", 62.4, 48.5)):
        assert (round(under.loc[sc, "mean_a"], 1), round(under.loc[sc, "mean_b"], 1)) == (a_, b_), sc
    best = ph[ph.comparison.str.contains("each with its best scorer") & (ph.ood_set == "average")]
    assert len(best) == 8 and (best.verdict == "no clear difference").all()
    bb = best[best.a == "bfm"].iloc[0]
    assert (bb.scorer_a, round(bb.mean_a, 1), round(bb.std_a, 1), bb.scorer_b, round(bb.mean_b, 1),
            round(bb.std_b, 1)) == ("scale", 51.8, 11.0, "scale", 46.4, 2.6)
    acc = pd.read_csv(RES / "accuracy.csv", dtype={"seed": str}).query("seed == 'mean'").set_index("method")
    acc = acc["id_accuracy"]
    assert (round(acc["bfm"], 1), round(acc["ce"], 1)) == (80.2, 80.3)
    # scorer vs method: the span of the average FPR95 across scorers within a method, across methods within a scorer
    m = pd.read_csv(RES / "metrics.csv", dtype={"seed": str})
    mm = m[(m.seed == "mean") & (m.ood_set == "average")].pivot(index="method", columns="scorer", values="fpr95")
    by_method = (mm.max(axis=1) - mm.min(axis=1)).round(1)
    by_scorer = (mm.max(axis=0) - mm.min(axis=0)).round(1)
    assert mm.shape == (9, 20)
    assert (by_method.min(), by_method.max(), by_scorer.min(), by_scorer.max()) == (30.9, 43.8, 4.6, 28.2)
    assert by_method.min() > by_scorer.max()   # every method's scorer span exceeds every scorer's method span
    assert (best.mean_a.round(1).min(), best.mean_a.round(1).max()) == (42.9, 51.8)
    # Energy-OE vs CE, paired and unpaired; the accuracy cost of the fine-tunes
    assert _paired("energy_oe", "ce", "average") == (-21.63, 10.33, 3, "lower")
    found = pd.read_csv(RES / "findings.csv").set_index(["a", "b", "ood_set"])
    assert all(found.loc[("energy_oe", "ce", o), "verdict"] == "lower" for o in (C100, TEX, NOISE, "average"))
    assert _paired("oe", "ce", "average")[0] > 0 and _paired("oe_grad", "oe", "average")[0] > 0
    cost = (acc["ce"] - acc[["oe", "energy_oe", "greg", "greg_plus", "oe_grad", "energy_oe_sampling", "bfm_greg"]])
    assert (round(cost.min(), 1), round(cost.max(), 1)) == (4.5, 6.8) and "4.5 to 6.8 points" in section


def test_cifar_files_are_unpacked_from_the_shared_folder_and_a_corrupt_copy_leaves_nothing(tmp_path, monkeypatch):
    """A missing official file is decompressed from ``<shared>/<path>.xz`` and checked against its md5 first."""
    import lzma

    shared, root = tmp_path / "shared", tmp_path / "root"
    for f in data.DATASETS["cifar10"].files[1:]:  # the seven official files, each a corrupt .xz copy
        (shared / f.path).parent.mkdir(parents=True, exist_ok=True)
        (shared / (f.path + ".xz")).write_bytes(lzma.compress(b"not the CIFAR file"))
    monkeypatch.setattr(fetching, "SHARED_DATA", shared)
    with pytest.raises(data.ChecksumError, match="expected"):
        data.load("cifar10", "test", root)
    assert not any(p.is_file() for p in root.rglob("*")), "a corrupt copy must leave no file behind"
    (shared / "cifar-10-batches-py" / "test_batch.xz").write_bytes(b"not xz at all")
    with pytest.raises(data.ChecksumError):
        data.load("cifar10", "test", root)


# --- how complete the run is (consistency, not completeness: the profile lands in pieces) ----------------------

def _dvc_states(pipe: Path = PIPE) -> dict[str, str]:
    """Each stage of a pipeline's dvc.yaml (default: the profile's) and its state, from `dvc status --json` (the DVC
    command line, not ood.budget), the lock and git: not in the lock -> "not run"; a changed command, dependency or
    parameter, or a changed committed output -> "stale"; else "cached" when an output is not in git (DVC-cached),
    "done" when all are. Outputs missing here because they are not in git, and inputs missing because a stage writes
    them and they are not in git, are no change: a fresh clone has neither, the clone that ran the stages has both."""
    import json
    import subprocess
    import sys

    rel = pipe.relative_to(ROOT).as_posix()
    p = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", f"{rel}/dvc.yaml"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    changed = {k.split(":", 1)[-1]: v for k, v in json.loads(p.stdout or "{}").items()}
    spec = yaml.safe_load((pipe / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((pipe / "params.yaml").read_text())
    stages = []
    for n, st in spec.items():   # foreach stages by their items, as DVC names them
        if "foreach" in st:
            items = params
            for k in st["foreach"].strip("${}").split("."):
                items = items[k]
            stages += [f"{n}@{i}" for i in items]
        else:
            stages.append(n)
    lock = _lock() if pipe == PIPE else yaml.safe_load((pipe / "dvc.lock").read_text())["stages"]
    in_git = lambda path: bool(subprocess.run(["git", "ls-files", path], cwd=ROOT, capture_output=True, text=True,
                                              check=True).stdout.strip())
    committed = {o["path"]: in_git(o["path"]) for s in lock.values() for o in s.get("outs", [])}
    states = {}
    for st in stages:
        if st not in lock:
            states[st] = "not run"
            continue
        kinds = set()
        for c in changed.get(st, []):
            for kind, what in (c.items() if isinstance(c, dict) else [(c, None)]):
                gone = isinstance(what, dict) and all(v in ("deleted", "not in cache") for v in what.values())
                # not in git: missing in a fresh clone, present where it ran (a lock output, or a folder of them)
                if gone and all(not in_git(k) and any(o == k or o.startswith(k.rstrip("/") + "/") for o in committed)
                                for k in what):
                    continue
                kinds.add(kind)
        outs_in_git = [committed[o["path"]] for o in lock[st].get("outs", [])]
        states[st] = "stale" if kinds else "done" if all(outs_in_git) else "cached"
    return states


def test_the_readme_says_which_stages_are_done_and_which_are_stale():
    """The README's status block lists every stage of the profile under the state DVC gives it against the lock: a
    stale result is reported as stale, never hidden."""
    import re

    block = _readme_block("status:cifar10-cpu")
    rows = dict(re.findall(r"^\| ([a-z ]+) \| (.+) \|$", block, re.M))
    rows.pop("state", None)
    listed = {name: state for state, names in rows.items() for name in re.findall(r"`([^`]+)`", names)}
    assert listed == _dvc_states(), "the README's status block is out of date: python -m ood.budget --status " \
                                    "pipelines/cifar10-cpu/dvc.yaml prints it"


def test_a_fresh_clone_finds_every_finished_stage_up_to_date():
    """Every output of every stage of the profile and of its fine-tune-length study is committed (none lives only in
    a DVC cache), so a fresh clone on another machine reruns nothing that was finished: no stage is "cached". The
    evaluate stages commit their bootstrap intervals and figure scores, and the tables, figures and export read
    those, not the per-image score caches (issue 40)."""
    for pipe in (PIPE, ROOT / "pipelines" / f"{PROFILE}-length"):
        states = _dvc_states(pipe)
        cached = sorted(st for st, state in states.items() if state == "cached")
        assert not cached, f"{pipe.relative_to(ROOT)}: a fresh clone would rerun {cached} (outputs only in DVC's cache)"


def test_every_committed_file_of_the_profile_is_an_output_of_a_lock_entry():
    """Nothing under results/, figures/, runs/ and notebooks/executed/ of the profile is in git without a lock entry
    that made it (a result no stage backs fails); the files' bytes are checked against the lock above and, for the
    run folders, by DVC's status."""
    import subprocess

    outs = [o["path"] for st in _lock().values() for o in st.get("outs", [])]
    study = ROOT / "pipelines" / f"{PROFILE}-length" / "dvc.lock"   # the fine-tune-length study's own pipeline
    if study.is_file():
        outs += [o["path"] for st in yaml.safe_load(study.read_text())["stages"].values() for o in st.get("outs", [])]
    tracked = subprocess.run(["git", "ls-files", f"results/{PROFILE}", f"figures/{PROFILE}", f"runs/{PROFILE}",
                              f"notebooks/executed/{PROFILE}"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked
    orphans = [f for f in tracked if not any(f == o or f.startswith(o.rstrip("/") + "/") for o in outs)]
    assert not orphans, f"committed without a lock entry that made them: {orphans[:10]}"


def test_a_stage_that_ran_has_its_run_folders_committed_without_optimizer_state():
    """The train and fine-tune stages that are done have their run folders in git: model.pt and history.csv per
    seed of the lock's seeds, no checkpoint.pt (the optimizer's state), each seed's weights its own."""
    import subprocess

    done = [s for s, state in _dvc_states().items() if state == "done" and s.startswith(("train@", "finetune@"))]
    for st in done:
        method = st.split("@")[1]
        seeds = _lock()[st]["params"]["pipelines/cifar10-cpu/params.yaml"]["seeds"]
        files = subprocess.run(["git", "ls-files", f"runs/{PROFILE}/{method}/seeds"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
        want = {f"runs/{PROFILE}/{method}/seeds/{s}/{f}" for s in seeds for f in ("model.pt", "history.csv")}
        assert set(files) == want, st
        digests = {hashlib.md5((ROOT / f"runs/{PROFILE}/{method}/seeds/{s}/model.pt").read_bytes()).hexdigest()
                   for s in seeds}
        assert len(digests) == len(seeds), f"{st}: two seeds have the same weights"
