"""The DVC pipeline on the default (synthetic) profile, end to end.

The ``repro`` fixture (conftest.py) is `dvc repro` in a throw-away copy of the checkout (``pipeline_root``), which
shares the checkout's DVC cache: the whole pipeline from a fresh clone. It runs in the background from the start of
the session (the whole suite) or the end of collection; the tests that take it, and the notebooks checked by nbval,
run after it has finished. The checkout itself is never written.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_stage_deps import _expected_stages  # a params.yaml's stages (the one-seed run's: its copy's params.yaml)

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


def test_the_quickstart_ran_as_written(repro):
    """The background pipeline was the README's Quickstart command (after its install part), run with a newcomer's
    PATH: no .venv/bin on it, no VIRTUAL_ENV. Every stage ran with the interpreter the install made, found by
    scripts/python; with `python` in the stage commands, the system interpreter ran them and `dvc repro` failed."""
    import conftest

    if "quickstart" not in conftest._bg:
        pytest.skip(f"{sys.executable} is not a virtual environment: the pipeline ran `python -m dvc repro` with "
                    "OOD_PYTHON instead of the README's Quickstart")
    install, rest = conftest.quickstart_command()
    readme = (ROOT / "README.md").read_text()
    assert f"```bash quickstart\n{install} && {rest}\n```" in readme
    assert conftest._bg["quickstart"] == rest == ".venv/bin/dvc repro"
    env = conftest._bg["env"]
    assert "VIRTUAL_ENV" not in env and "OOD_PYTHON" not in env
    assert all(Path(d).resolve() != BIN.resolve() for d in env["PATH"].split(":") if d)
    # the data stage's outputs are committed, so DVC reruns it only when its code or parameters changed
    assert "Running stage 'train@ce'" in repro.stdout and "Running stage 'evaluate@ce'" in repro.stdout


def test_the_stage_interpreter_is_the_install_whatever_the_path(tmp_path):
    """scripts/python, which every stage runs: the checkout's .venv with an empty PATH; $OOD_PYTHON first; without a
    .venv, python3 on the PATH only if it has the project, else one line naming the fix and exit status 2."""
    import conftest

    script = ROOT / "scripts" / "python"
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    venv_python = ROOT / ".venv" / "bin" / "python"
    if venv_python.exists():
        p = subprocess.run([str(script), "-c", "import sys, papermill; print(sys.prefix)"], env=bare,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and Path(p.stdout.strip()).resolve() == (ROOT / ".venv").resolve(), p.stderr
    p = subprocess.run([str(script), "-c", "import sys; print(sys.executable)"],
                       env={**bare, "OOD_PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == sys.executable
    # a clone without .venv: the script copied alone; python3 on the PATH is a stub without the project
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "python").write_bytes(script.read_bytes())
    (tmp_path / "scripts" / "python").chmod(0o755)
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3").write_text("#!/bin/sh\nexit 1\n")
    (stub / "python3").chmod(0o755)
    p = subprocess.run([str(tmp_path / "scripts" / "python"), "-c", "pass"],
                       env={**bare, "PATH": f"{stub}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "bash scripts/install.sh" in p.stderr and "environment.yml" in p.stderr
    # python3 on the PATH with the project (this interpreter, as an activated environment would put it)
    (stub / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    p = subprocess.run([str(tmp_path / "scripts" / "python"), "-c", "import ood; print('ok')"],
                       env={**conftest.newcomer_env(), "PATH": f"{stub}:/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def _run_seeds(pipeline_root) -> list[int]:
    """The seeds the suite's pipeline ran: params.yaml's, or seed 0 alone (conftest.py's one-seed run)."""
    from ood.config import load_params

    return load_params(pipeline_root / "params.yaml")["seeds"]


def _run_methods(pipeline_root) -> list[str]:
    """The methods the suite's pipeline evaluated: params.yaml's, or those of the one-seed run (conftest.py's
    ONE_SEED_LEAVES_OUT gone)."""
    from ood.config import load_params

    return load_params(pipeline_root / "params.yaml")["pipeline"]["evaluate"]


def test_the_one_seed_params_keep_every_line_but_the_edited_ones_and_refuse_another_layout():
    """conftest.one_seed_params: seed 0, the left-out methods gone from the fine-tunes and the evaluated methods,
    every other line as it was (read back with PyYAML, not with the regular expressions it edits with); a
    params.yaml without the lines it edits stops the session with what to update."""
    import yaml

    import conftest

    text = (ROOT / "params.yaml").read_text()
    new = conftest.one_seed_params(text)
    want, got = yaml.safe_load(text), yaml.safe_load(new)
    gone = set(conftest.ONE_SEED_LEAVES_OUT)
    assert got["seeds"] == [0] and gone and gone <= set(want["pipeline"]["evaluate"])
    assert got["pipeline"]["evaluate"] == [m for m in want["pipeline"]["evaluate"] if m not in gone]
    assert got["pipeline"]["finetune"] == {m: i for m, i in want["pipeline"]["finetune"].items() if m not in gone}
    assert {k: v for k, v in got.items() if k not in ("seeds", "pipeline")} == \
        {k: v for k, v in want.items() if k not in ("seeds", "pipeline")}
    assert {k: v for k, v in got["pipeline"].items() if k not in ("evaluate", "finetune")} == \
        {k: v for k, v in want["pipeline"].items() if k not in ("evaluate", "finetune")}
    assert len(text.splitlines()) - len(new.splitlines()) == len(gone)   # comments and order kept
    for bad in (text.replace("seeds: [", "seeds: ["[:-1] + "(", 1),
                text.replace(f"    {conftest.ONE_SEED_LEAVES_OUT[0]}: ", "    renamed: ", 1)):
        with pytest.raises(pytest.UsageError, match="params.yaml: no"):
            conftest.one_seed_params(bad)


def test_the_one_seed_run_leaves_out_only_what_conftest_says(repro, pipeline_root, params):
    """The one-seed run trains and scores every method but conftest.ONE_SEED_LEAVES_OUT; the full run every method.
    Whatever it leaves out, every stage kind and every method a figure or the tour shows still runs."""
    import yaml

    import conftest

    ran = _run_methods(pipeline_root)
    every = params["pipeline"]["evaluate"]
    gone = () if conftest._bg["full"] else conftest.ONE_SEED_LEAVES_OUT
    assert ran == [m for m in every if m not in gone] and set(gone) <= set(every)
    stages = _expected_stages(pipeline_root / "params.yaml")   # its dvc.lock also keeps the left-out stages' entries
    assert stages <= set(yaml.safe_load((pipeline_root / "dvc.lock").read_text())["stages"])
    assert {s.split("@")[0] for s in stages} >= {"data", "train", "finetune", "evaluate", "tables", "figures"}
    assert {f"evaluate@{m}" for m in ran} <= stages and not {f"finetune@{m}" for m in gone} & stages
    ran_stages = set(re.findall(r"Running stage '([^']+)'", repro.stdout))
    assert not {s for s in ran_stages if s.partition("@")[2] in gone}, ran_stages
    shown = {m for ms in params["pipeline"]["figures"].values() for m in ms} | {"ce", "bfm", "energy_oe", "greg",
                                                                               "greg_plus"}   # the tour's
    assert shown <= set(ran), f"a figure or the tour shows {sorted(shown - set(ran))}, which the run left out"


def test_pipeline_writes_the_tables_with_every_method_seed_and_scorer(pipeline_root, params):
    import conftest

    params = {**params, "seeds": _run_seeds(pipeline_root)}
    assert params["seeds"] == ([0] if not conftest._bg["full"] else params["seeds"])
    prof = params["profile"]
    res = pipeline_root / "results" / prof
    m = pd.read_csv(res / "metrics.csv", dtype={"seed": str})
    assert list(m.columns) == ["benchmark", "method", "seed", "scorer", "ood_set", "fpr95", "auroc", "aupr_in",
                               "aupr_out", "fpr95_ood_pos"]
    methods = _run_methods(pipeline_root)
    scorers = SCORERS   # every registered scorer (no profile narrows them)
    sets = list(params["profiles"][prof]["benchmark"]["ood"]) + ["average"]
    seeds = [str(s) for s in params["seeds"]]
    assert len(seeds) >= 3 or not conftest._bg["full"]
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
                          ("std", lambda v: np.std(v, ddof=1), 0.005 * (1 + (n / max(n - 1, 1)) ** 0.5)))[:n]:
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


def test_evaluate_commits_its_intervals_and_figure_scores_beside_its_metrics(pipeline_root, params):
    """Each evaluate stage writes, beside its metrics, every seed's FPR95 with its bootstrap interval per scorer and
    set, and the energy scores of every image; the tables and figures read those, never the score caches, which are
    a by-product outside DVC. Checked here against the metrics (ood.metrics through ood.evaluate, 4 decimals), the
    score caches (the same arrays) and the tables' gathered intervals."""
    import numpy as np

    prof = params["profile"]
    res = pipeline_root / "results" / prof
    sets = list(params["profiles"][prof]["benchmark"]["ood"])
    seeds = _run_seeds(pipeline_root)
    gathered = []
    for m in _run_methods(pipeline_root):
        iv = pd.read_csv(res / "intervals" / f"{m}.csv", float_precision="round_trip")
        gathered.append(iv)
        met = pd.read_csv(res / "runs" / f"{m}.csv")
        both = iv.merge(met, on=["method", "seed", "scorer", "ood_set"], suffixes=("", "_metrics"))
        assert len(both) == len(iv) == len(met) == len(seeds) * len(SCORERS) * (len(sets) + 1)
        assert ((both.fpr95 - both.fpr95_metrics).abs() <= 0.00005 + 1e-9).all(), m
        assert ((both.fpr95_lo <= both.fpr95 + 1e-9) & (both.fpr95 <= both.fpr95_hi + 1e-9)).all(), m
        with np.load(res / "scores" / f"{m}.npz") as fig:
            assert sorted(fig.files) == sorted(f"{s}/energy/{o}" for s in seeds for o in ["id", *sets])
            for s in seeds:
                with np.load(pipeline_root / "cache" / prof / m / f"seed{s}.npz") as cache:
                    for o in ["id", *sets]:
                        assert np.array_equal(fig[f"{s}/energy/{o}"], cache[f"energy/{o}"]), (m, s, o)
    tables = pd.read_csv(res / "fpr95_intervals.csv")
    want = pd.concat(gathered, ignore_index=True).to_csv(index=False, float_format="%.2f")
    assert (res / "fpr95_intervals.csv").read_text() == want and len(tables) == sum(map(len, gathered))
    lock = (pipeline_root / "dvc.lock").read_text()
    assert f"cache/{prof}" not in lock   # no stage declares (or reads) the score caches


# The published results that must come out bit for bit on any x86-64 CPU with AVX2 (ood/repro.py); figures are
# left out (their PNG/PDF bytes depend on matplotlib's version, not on the numbers).
REPRODUCED = ["metrics.csv", "accuracy.csv", "summary.json", "findings.csv", "data.csv", "runs", "history"]


@pytest.mark.full_pipeline
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


@pytest.mark.full_pipeline
def test_a_fresh_repro_leaves_git_status_clean(pipeline_root):
    """The throw-away copy is a fresh checkout whose `dvc repro` ran every stage (no output was there): every
    tracked file it wrote, dvc.lock, the executed notebooks, results/ and figures/ included, is the committed one.
    (Figures are PNG/PDF bytes of this matplotlib; the other checks above say which number moved, if one did.)"""
    p = run("git", "status", "--porcelain", "--untracked-files=no", cwd=pipeline_root)
    assert p.stdout == "", f"`dvc repro` from a fresh checkout changed tracked files:\n{p.stdout}"
    d = run("git", "diff", "--stat", cwd=pipeline_root)
    assert d.stdout == ""


GOLDEN = ROOT / "tests" / "golden" / "synthetic-seed0.yaml"


def _outs_of(lock: Path) -> dict[str, dict[str, str]]:
    """Per stage of a dvc.lock, its outputs' md5 (a file's, or DVC's digest of a folder's listing)."""
    import yaml

    stages = yaml.safe_load(lock.read_text())["stages"]
    return {name: {o["path"]: o["md5"] for o in st.get("outs", [])} for name, st in stages.items()}


#: The golden's entry for what the stages write outside DVC: every scorer's per-image scores (the evaluate stage's
#: score caches, ood/run_evaluate.py), so that a change of bits in any scorer fails even where the committed
#: outputs (metrics to 4 decimals, intervals, the energy scores) would not show it.
BY_PRODUCTS = "(by-products) score caches"


def _by_products(root: Path) -> dict[str, str]:
    import hashlib

    return {f.relative_to(root).as_posix(): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted((root / "cache").rglob("*.npz"))}


def test_the_one_seed_run_has_the_bytes_of_the_golden_lock(pipeline_root, params):
    """The suite's default pipeline run trains, fine-tunes, evaluates, tabulates and draws seed 0 alone, from the
    Quickstart's command in a fresh copy: every output of every stage (data, weights, results, figures, executed
    notebooks), and every score cache the evaluate stages write beside them, must have the md5 that
    tests/golden/synthetic-seed0.yaml records for it, from the
    same run on the committed code. A change of bits in any stage or notebook fails here. When the numbers move on
    purpose, rerun the full pipeline (`dvc repro`, commit), then write the golden anew:
    `OOD_WRITE_GOLDEN=1 .venv/bin/python -m pytest tests/test_pipeline.py -k golden` (docs/maintainers.md)."""
    import yaml

    import conftest

    if conftest._bg["full"]:
        pytest.skip("the full pipeline ran (every seed); its outputs are compared with the committed ones instead")
    ran = _expected_stages(pipeline_root / "params.yaml")   # dvc.lock keeps the committed entries of the left-out
    got = {stage: outs for stage, outs in _outs_of(pipeline_root / "dvc.lock").items() if stage in ran}
    got[BY_PRODUCTS] = _by_products(pipeline_root)
    if os.environ.get("OOD_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("# The md5 of every output of the synthetic pipeline run with seed 0 alone (params.yaml "
                          "seeds: [0]) and\n# without conftest.ONE_SEED_LEAVES_OUT, per stage, as its dvc.lock records "
                          "them: what the suite's\n# one-seed run must reproduce (tests/test_pipeline.py; rewrite with "
                          "OOD_WRITE_GOLDEN=1).\n"
                          + yaml.safe_dump(got, sort_keys=True))
        pytest.skip(f"wrote {GOLDEN.relative_to(ROOT)}")
    want = yaml.safe_load(GOLDEN.read_text())
    assert set(got) == set(want), f"stages differ: {sorted(set(got) ^ set(want))}"
    moved = [f"{stage}: {path}" for stage in want for path, md5 in want[stage].items() if got[stage].get(path) != md5]
    assert not moved, (f"{len(moved)} output(s) of the one-seed run differ from {GOLDEN.relative_to(ROOT)}: "
                       f"{moved[:12]}; if the code moved these bits on purpose, see this test's docstring")


def test_the_one_seed_run_is_seed_0_of_the_committed_results(pipeline_root, params):
    """Seed 0 of a one-seed run is seed 0 of the committed three-seed run: the same rows, byte for byte, in the data
    check, the training histories, the per-method metrics and the tables' per-seed rows (so the golden above cannot
    drift from the committed results). The committed rows of the methods the one-seed run leaves out
    (conftest.ONE_SEED_LEAVES_OUT) are left out of the comparison."""
    prof = params["profile"]
    committed, rerun = ROOT / "results" / prof, pipeline_root / "results" / prof
    assert (rerun / "data.csv").read_bytes() == (committed / "data.csv").read_bytes()
    methods = _run_methods(pipeline_root)
    files = ["metrics.csv", "accuracy.csv", *(f"history/{m}.csv" for m in methods), *(f"runs/{m}.csv" for m in methods)]
    for rel in files:
        mine, theirs = (rerun / rel).read_text().splitlines(), (committed / rel).read_text().splitlines()
        head = theirs[0].split(",")
        col, by = head.index("seed"), head.index("method") if "method" in head else None   # history: one method
        seed0 = [line for line in theirs[1:] if line.split(",")[col] == "0"
                 and (by is None or line.split(",")[by] in methods)]
        ran = [line for line in mine[1:] if line.split(",")[col] == "0"]
        assert mine[0] == theirs[0] and seed0 and ran == seed0, f"results/{prof}/{rel}: seed 0 differs"


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
    """conftest.py: the tests that need `dvc repro` come after the unit tests and the start of the rehearsal's
    pipelines, the tests that wait for those last, and `dvc repro` was started at collection exactly when some
    collected test needs it."""
    import conftest

    items = request.session.items
    flags = [conftest.suite_order(i) for i in items]
    assert flags == sorted(flags), "a test runs before a group that should come first (conftest.suite_order)"
    assert all((f == 2) == conftest.needs_pipeline(i) for f, i in zip(flags, items))
    waits = ["rehearsals" in getattr(i, "fixturenames", ()) and i.get_closest_marker("starts_background") is None
             for i in items]
    assert all((f == 3) == w for f, w in zip(flags, waits))
    assert (2 in flags) == ("proc" in conftest._bg or "result" in conftest._bg)


def test_the_pipeline_copy_reads_its_data_where_the_checkout_does(pipeline_root):
    """conftest.py links the copy's data root (git-ignored) to the checkout's, so the real sets that unit tests load
    under OOD_ROOT are unpacked once, and the pipeline's copy does not show the link to git or DVC."""
    assert (pipeline_root / "data").is_symlink()
    assert (pipeline_root / "data").resolve() == (ROOT / "data").resolve()
    status = run("git", "status", "--porcelain", "--", "data", cwd=pipeline_root).stdout
    assert status == "", status


def _session_cores() -> set[int]:
    """The cores the session started with (while the pipeline runs, the unit tests are held to some of them)."""
    import conftest

    return set(conftest._bg.get("affinity") or os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(_session_cores()) < 2,
                    reason="needs Linux's CPU affinity and two cores")
def test_widen_tree_gives_every_descendant_thread_the_wider_cores():
    """conftest.widen_tree, which hands the pipeline every core while the suite waits for it: a child and its
    grandchild started on one core run on every core afterwards; an unrelated process keeps its one core. Oracle:
    the kernel's own view of each thread (/proc/<pid>/task/<tid>/status, Cpus_allowed_list)."""
    import conftest

    every = _session_cores()
    one = {min(every)}
    pin = lambda: os.sched_setaffinity(0, one)   # noqa: E731
    tree = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], preexec_fn=pin)
    other = subprocess.Popen(["sleep", "60"], preexec_fn=pin)
    try:
        for _ in range(100):   # until bash has started its child
            kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == tree.pid]
            if kids:
                break
            time.sleep(0.05)
        assert kids, "bash did not start its child"
        assert allowed(tree.pid) == allowed(kids[0]) == {frozenset(one)}
        conftest.widen_tree(tree.pid, every)
        assert allowed(tree.pid) == allowed(kids[0]) == {frozenset(every)}
        assert allowed(other.pid) == {frozenset(one)}
    finally:   # bash's child first: once bash is gone, the child is no longer found by its parent
        subprocess.run(["pkill", "-P", str(tree.pid)], check=False)
        for p in (tree, other):
            p.kill()
        tree.wait()
        other.wait()


def allowed(pid: int) -> set[frozenset]:
    """The cores each thread of process ``pid`` may run on, as the kernel says (Cpus_allowed_list)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        line = next(ln for ln in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
                    if ln.startswith("Cpus_allowed_list:"))
        cores = set()
        for part in line.split(":")[1].strip().split(","):
            lo, _, hi = part.partition("-")
            cores |= set(range(int(lo), int(hi or lo) + 1))
        out.append(frozenset(cores))
    return set(out)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(_session_cores()) < 2,
                    reason="needs Linux's CPU affinity and two cores")
def test_a_waiting_test_gets_the_pipelines_core_for_its_processes_once_the_pipeline_is_done(monkeypatch):
    """conftest.lend_idle_cores, which the rehearsal calls while it waits for its three pipelines: while the
    background pipeline runs, a process pinned to one core stays there; once none runs, it may run on every core of
    the session. Oracle: the kernel's Cpus_allowed_list of each of its threads."""
    import conftest

    every = _session_cores()
    one = {min(every)}
    mine = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: os.sched_setaffinity(0, one))
    pipeline = subprocess.Popen(["sleep", "60"])   # stands for a background pipeline that still runs
    try:
        monkeypatch.setattr(conftest, "_bg", {"proc": pipeline, "affinity": every})
        assert conftest.lend_idle_cores([mine.pid]) is False
        assert allowed(mine.pid) == {frozenset(one)}
        monkeypatch.setattr(conftest, "_bg", {"affinity": every})   # no pipeline (done, or never started)
        assert conftest.lend_idle_cores([mine.pid]) is True
        assert allowed(mine.pid) == {frozenset(every)}
    finally:
        for p in (mine, pipeline):
            p.kill()
            p.wait()


def _ppid(pid: int) -> int:
    try:
        return int(next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if ln.startswith("PPid:")).split()[1])
    except (OSError, StopIteration):
        return -1


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
    methods = _run_methods(pipeline_root)
    train = ({f"train@{m}" for m in params["pipeline"]["scratch"]}
             | {f"finetune@{m}" for m in params["pipeline"]["finetune"] if m in methods})
    evaluate = {f"evaluate@{m}" for m in methods}
    loads_data = {"data", "figures"} | train | evaluate
    assert _status_after(pipeline_root, "ood/plots.py", _docstring_edit) == {"figures"}
    assert _status_after(pipeline_root, "ood/scorers/logits.py", _docstring_edit) == evaluate | {"tables", "figures"}
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
