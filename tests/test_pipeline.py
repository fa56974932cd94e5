"""The DVC pipeline on the default (synthetic) profile, end to end.

The ``repro`` fixture (conftest.py) is `dvc repro` in a throw-away copy of the checkout (``pipeline_root``), which
shares the checkout's DVC cache: the whole pipeline from a fresh clone. It runs in the background from the start of
the session (the whole suite) or the end of collection; the tests that take it, and the notebooks checked by nbval,
run after it has finished. The checkout itself is never written.
"""
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, DVC, ENV, ROOT  # the checkout, this Python's bin/, PATH with it first, `python -m dvc`
from ood.scorers import SCORERS


def run(*args, check=True, timeout=1800, cwd=ROOT):
    p = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="session")
def params():
    from ood.config import load_params

    return load_params(ROOT / "params.yaml")


def test_pipeline_writes_the_tables_with_every_method_seed_and_scorer(pipeline_root, params):
    prof = params["profile"]
    res = pipeline_root / "results" / prof
    m = pd.read_csv(res / "metrics.csv", dtype={"seed": str})
    assert list(m.columns) == ["benchmark", "method", "seed", "scorer", "ood_set", "fpr95", "auroc", "aupr_in",
                               "aupr_out", "fpr95_ood_pos"]
    methods = params["pipeline"]["evaluate"]
    scorers = SCORERS   # every registered scorer (no profile narrows them)
    sets = list(params["profiles"][prof]["benchmark"]["ood"]) + ["average"]
    seeds = [str(s) for s in params["seeds"]]
    assert len(seeds) >= 3
    assert set(m.method) == set(methods) and set(m.scorer) == set(scorers) and set(m.ood_set) == set(sets)
    assert set(m.seed) == set(seeds) | {"mean", "std"}
    assert len(m) == len(methods) * len(scorers) * len(sets) * (len(seeds) + 2)
    runs = m[m.seed.isin(seeds)]
    cols = ["fpr95", "auroc", "aupr_in", "aupr_out", "fpr95_ood_pos"]
    assert runs[cols].apply(lambda c: c.between(0, 100)).all().all()
    avg = runs[runs.ood_set == "average"].set_index(["method", "scorer", "seed"])
    per = runs[runs.ood_set != "average"].groupby(["method", "scorer", "seed"])[["fpr95", "auroc"]].mean()
    assert ((avg[["fpr95", "auroc"]] - per.loc[avg.index]).abs() < 0.02).all().all()
    # the aggregate rows are the mean and the sample std of the seeds' rows (recomputed here with numpy)
    import numpy as np

    key = ["method", "scorer", "ood_set"]
    # The CSV rounds every row to 2 decimals: the seeds' rows by up to 0.005 each, which moves their mean by up to
    # 0.005 and their sample std by up to 0.005 * sqrt(n / (n - 1)); the aggregate row itself is rounded by 0.005.
    n = len(seeds)
    for stat, fn, tol in (("mean", np.mean, 0.01),
                          ("std", lambda v: np.std(v, ddof=1), 0.005 * (1 + (n / (n - 1)) ** 0.5))):
        got = m[m.seed == stat].set_index(key)["fpr95"]
        want = runs.groupby(key)["fpr95"].agg(lambda v: fn(v.to_numpy()))  # noqa: B023 (called in this iteration)
        assert (got - want.loc[got.index]).abs().max() <= tol + 1e-9, stat
    acc = pd.read_csv(res / "accuracy.csv", dtype={"seed": str})
    assert list(acc.columns) == ["benchmark", "method", "seed", "id_accuracy"] and set(acc.method) == set(methods)
    assert (acc[acc.seed.isin(seeds)].id_accuracy > 50).all()
    for metric in ("fpr95", "auroc", "aupr_in", "aupr_out"):
        assert "FPR95" in (res / f"{metric}.md").read_text()  # every caption states the convention
        assert "\\begin{table}" in (res / f"{metric}.tex").read_text()
    for fig in ("samples", "heatmap_fpr95", "histograms", "roc", "training_curves"):
        assert (pipeline_root / "figures" / prof / f"{fig}.png").stat().st_size > 5000


# The published results that must come out bit for bit on any x86-64 CPU with AVX2 (ood/repro.py); figures are
# left out (their PNG/PDF bytes depend on matplotlib's version, not on the numbers).
REPRODUCED = ["metrics.csv", "accuracy.csv", "summary.json", "findings.csv", "data.csv", "runs", "history"]


def test_the_pipeline_reproduces_the_committed_results_bit_for_bit(pipeline_root, params):
    prof = params["profile"]
    committed, rerun = ROOT / "results" / prof, pipeline_root / "results" / prof
    for name in REPRODUCED:
        files = sorted(p.relative_to(committed) for p in (committed / name).rglob("*") if p.is_file()) \
            if (committed / name).is_dir() else [Path(name)]
        assert files, f"nothing committed under results/{prof}/{name}"
        for rel in files:
            assert (rerun / rel).read_bytes() == (committed / rel).read_bytes(), (
                f"results/{prof}/{rel} of a fresh `dvc repro` differs from the committed file: the committed results "
                "are stale (rerun `dvc repro` and commit them) or the run is not reproducible on this CPU")


def test_published_histories_carry_no_wall_clock(pipeline_root, params):
    files = sorted((pipeline_root / "results" / params["profile"] / "history").glob("*.csv"))
    assert files
    for f in files:
        cols = pd.read_csv(f, nrows=1).columns
        assert "seed" in cols and "epoch" in cols and not {"seconds", "time", "wall"} & set(cols), f.name


def test_a_fresh_repro_leaves_git_status_clean(pipeline_root):
    """The throw-away copy is a fresh checkout whose `dvc repro` ran every stage (no output was there): every
    tracked file it wrote, dvc.lock, the executed notebooks, results/ and figures/ included, is the committed one.
    (Figures are PNG/PDF bytes of this matplotlib; the other checks above say which number moved, if one did.)"""
    p = run("git", "status", "--porcelain", "--untracked-files=no", cwd=pipeline_root)
    assert p.stdout == "", f"`dvc repro` from a fresh checkout changed tracked files:\n{p.stdout}"
    d = run("git", "diff", "--stat", cwd=pipeline_root)
    assert d.stdout == ""


def test_second_repro_does_nothing(pipeline_root):
    p = run(*DVC, "repro", cwd=pipeline_root)
    assert "Data and pipelines are up to date." in p.stdout
    assert "Running stage" not in p.stdout


def test_dvc_metrics_show_prints_headline_numbers(pipeline_root):
    p = run(*DVC, "metrics", "show", cwd=pipeline_root)
    assert "summary.json" in p.stdout and "id_accuracy" in p.stdout


def test_changing_one_method_parameter_reruns_only_that_method(pipeline_root):
    path = pipeline_root / "profiles" / "synthetic.yaml"
    text = path.read_text()
    new, n = re.subn(r"(\n    greg: \{recipe: finetune,)", r"\1 epochs: 3,", text, count=1)
    assert n == 1, "profiles/synthetic.yaml layout changed: update this test"
    try:
        path.write_text(new)
        p = run(*DVC, "repro", "--dry", cwd=pipeline_root)
    finally:
        path.write_text(text)
    stages = set(re.findall(r"Running stage '([^']+)'", p.stdout))
    assert stages == {"finetune@greg"}, p.stdout


# The papermill command itself, and the stages' runner (python -m ood.nbrun: papermill's arguments, a faster start
# and stop), which saves about 4 s per case; both report the first cell's one-line error.
PAPERMILL = ("papermill",)
NBRUN = ("-m", "ood.nbrun")


# End to end, one case per runner (each case starts a kernel and imports torch, about 5 s); every bad name and
# value (negative epochs, unknown profile, ...) is checked in-process by
# tests/test_config.py::test_notebook_params_reject_with_one_line.
@pytest.mark.parametrize("runner, args, message", [
    (PAPERMILL, ["-p", "epochz", "3"], "unknown parameter 'epochz' for notebook 'train'"),
    (NBRUN, ["-p", "method", "sgd"], "invalid value 'sgd' for parameter 'method'; allowed: 'ce', 'bfm'"),
])
def test_bad_parameters_stop_the_first_cell(tmp_path, runner, args, message):
    cmd = (str(BIN / "papermill"),) if runner == PAPERMILL else (sys.executable, *runner)
    p = run(*cmd, "notebooks/02_train.ipynb", str(tmp_path / "out.ipynb"), *args, check=False, timeout=300)
    assert p.returncode != 0
    assert message in p.stdout + p.stderr
    assert (tmp_path / "out.ipynb").is_file()  # the failed notebook is written, with the error in its first cell


def test_nbrun_skips_the_slow_iri_checker_and_stops_kernels_at_once():
    code = ("import sys\nfrom ood import nbrun\n"
            "try:\n    nbrun.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "from papermill.engines import papermill_engines\n"
            "assert 'nbformat' in sys.modules and 'jsonschema' in sys.modules\n"
            "assert sys.modules.get('rfc3987_syntax') is None\n"
            "print(papermill_engines.get_engine(None).__name__)\n")
    p = run(sys.executable, "-c", code, timeout=120)
    assert p.stdout.strip().endswith("FastStopEngine")
    assert "Usage: python -m ood.nbrun" in p.stdout


def test_pipeline_runs_in_the_background_and_its_tests_run_last(request):
    """conftest.py: the tests that need `dvc repro` come after every other test, and `dvc repro` was started at
    collection exactly when some collected test needs it."""
    import conftest

    flags = [conftest.needs_pipeline(i) for i in request.session.items]
    assert flags == sorted(flags), "a test that needs the pipeline is collected before a unit test"
    assert any(flags) == ("proc" in conftest._bg or "result" in conftest._bg)


def _status_after(pipeline_root, rel, edit) -> set[str]:
    """The stages `dvc status` names after ``edit(text)`` of the file ``rel`` in the pipeline's copy (restored)."""
    import json

    path = pipeline_root / rel
    text = path.read_text()
    try:
        path.write_text(edit(text))
        p = run(*DVC, "status", "--json", "dvc.yaml", cwd=pipeline_root)
    finally:
        path.write_text(text)
    return set(json.loads(p.stdout or "{}"))


def _docstring_edit(text: str) -> str:
    """A module whose docstring gained a word: code that cannot move a number."""
    new, n = re.subn(r'^(r?""")', r"\1Edited. ", text, count=1)
    assert n == 1, "the module starts with its docstring"
    return new


def test_editing_a_module_or_a_parameter_names_exactly_the_stages_that_use_it(pipeline_root, params):
    """Every stage depends on its module closure (dvc.yaml, tests/test_stage_deps.py) and on every parameter it reads:
    an edit of one module's docstring names exactly the stages that import it, directly or through other modules."""
    methods = params["pipeline"]["evaluate"]
    train = ({f"train@{m}" for m in params["pipeline"]["scratch"]}
             | {f"finetune@{m}" for m in params["pipeline"]["finetune"]})
    evaluate = {f"evaluate@{m}" for m in methods}
    loads_data = {"data", "figures"} | train | evaluate
    assert _status_after(pipeline_root, "ood/plots.py", _docstring_edit) == {"figures"}
    assert _status_after(pipeline_root, "ood/scorers.py", _docstring_edit) == evaluate | {"tables", "figures"}
    # the loss terms: the training stages, and the figures (BFM's background positions); `dvc status` names the
    # stages whose own deps changed, and `dvc repro` then reruns what their new outputs feed
    assert _status_after(pipeline_root, "ood/losses.py", _docstring_edit) == train | {"figures"}
    assert _status_after(pipeline_root, "ood/tables.py", _docstring_edit) == {"tables"}
    assert _status_after(pipeline_root, "ood/data/registry.py", _docstring_edit) == loads_data
    assert _status_after(pipeline_root, "ood/nbrun.py", _docstring_edit) == loads_data | {"tables"}
    assert _status_after(pipeline_root, "notebooks/02_train.ipynb", lambda t: t + "\n") == train
    assert _status_after(pipeline_root, "params.yaml",
                         lambda t: re.sub(r"^seeds: \[[^\]]*\]", "seeds: [0, 1]", t, count=1, flags=re.M)) \
        == train | evaluate | {"tables", "figures"}
    yaml = "profiles/synthetic.yaml"
    assert _status_after(pipeline_root, yaml, lambda t: t.replace("    batch_size: 128   # fastest",
                                                                  "    batch_size: 64   # fastest", 1)) \
        == evaluate | {"tables", "figures"}
    assert _status_after(pipeline_root, yaml,
                         lambda t: t.replace("    num_classes: 10\n",
                                             "    num_classes: 10\n    average_over: [noise]\n", 1)) \
        == {"data"} | evaluate | {"tables", "figures"}
    # another profile's pipeline (pipelines/cifar10-cpu/) and knobs leave the default pipeline's stages alone
    assert _status_after(pipeline_root, "profiles/cifar10-cpu.yaml",
                         lambda t: t.replace("    num_classes: 10\n",
                                             "    num_classes: 10\n    average_over: []\n", 1)) == set()
    assert _status_after(pipeline_root, "pipelines/cifar10-cpu/params.yaml",
                         lambda t: re.sub(r"^seeds: \[[^\]]*\]", "seeds: [5]", t, count=1, flags=re.M)) == set()
