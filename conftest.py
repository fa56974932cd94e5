"""The DVC pipeline runs in a throw-away copy of the checkout, in the background, while the unit tests run.

``dvc repro`` of the default profile takes several minutes on a 2-core CPU, much of it in one core (a Python process
and a Jupyter kernel start per stage). When the collected tests include one that needs the pipeline's outputs,
``dvc repro`` runs in the background - from the start of the session when pytest runs the whole suite (no paths
given: what the README's test command does), else from the end of collection - and:

* by default it runs **seed 0 alone**, without the three methods of :data:`ONE_SEED_LEAVES_OUT`: the copy's
  ``params.yaml`` says ``seeds: [0]`` and leaves them out of ``pipeline`` (:func:`one_seed_params`), and
  ``tests/test_pipeline.py`` checks every output of every stage against the md5 that
  ``tests/golden/synthetic-seed0.yaml`` records for that run, and seed 0's rows against the committed three-seed
  results. When a selected test is marked ``full_pipeline`` (``pytest -m ""`` selects every test; pyproject.toml's
  ``-m "not full_pipeline"`` leaves them out), it runs every seed, and those tests compare the outputs with the
  committed ones byte for byte (docs/maintainers.md);
* it runs in a **copy** of the working tree (tracked and untracked, not ignored, files and ``.git``) under the
  system's temporary folder, :data:`PIPELINE_ROOT`, sharing the checkout's DVC cache: the checkout itself is never
  written, so ``git status`` is as clean after the suite as before it. ``OOD_ROOT`` points every notebook kernel
  (nbval) and ``ood.config.repo_root()`` at the copy. The copy is removed at the end of the session;
* the tests that need it run last, each after ``dvc repro`` has finished: a test taking the ``repro`` fixture, a
  test marked ``pipeline``, and every notebook under nbval (they read the pipeline's checkpoints and scores);
* every other test runs first, meanwhile, with one torch thread, on a core of its own and at the lowest CPU priority
  (Linux's ``SCHED_IDLE``, else ``nice 19``): the cores are split in two, the pipeline's and the unit tests' (with
  two cores, one each; :func:`_split_cpus` says why a priority alone does not do; ``OOD_SUITE_SPLIT_CORES=0`` turns
  the split off). Thread count, cores and priority are restored as soon as the pipeline has finished (checked before
  each test). When the unit tests are done first, the pipeline gets every core while the suite waits for it
  (:func:`_widen_pipeline`). The paper profiles' rehearsal starts its three pipelines after the unit tests, lets
  them run beside the pipeline's tests and waits for them last (:func:`suite_order`); they get every core once the
  suite's pipeline is done (:func:`lend_idle_cores`). The terminal summary says how long the pipeline took;
* the copy's data root (``data/``, git-ignored) is a link to the checkout's, so that the unit tests loading real data
  through ``OOD_ROOT`` unpack ``../shared/data`` once, where every other test finds it.

The pipeline runs through the entry point a newcomer uses: the README's Quickstart command (its ```` ```bash
quickstart```` block) after its install part, which the test command has already done, run by ``bash`` in the copy
with the ``PATH`` a newcomer has: this interpreter's folder (``.venv/bin``) and ``VIRTUAL_ENV`` removed, and the
copy's ``.venv`` a link to the install this interpreter belongs to, as in a clone where ``scripts/install.sh`` ran. A
stage that works only with the venv on the ``PATH`` then fails every pipeline test. When this interpreter is not a
virtual environment (a conda environment, say), the pipeline runs ``python -m dvc repro`` with ``OOD_PYTHON`` set to
it instead, and ``tests/test_pipeline.py::test_the_quickstart_ran_as_written`` is skipped with the reason. Other
DVC commands of the tests run as ``python -m dvc`` with this interpreter; when DVC is not importable the pipeline's
tests are skipped with the reason. Under pytest-xdist only one process may start it, so a worker refuses. A pipeline
still running after :data:`PIPELINE_TIMEOUT_S` seconds is stopped and its tests fail with "timed out". A failed
``dvc repro`` fails them with the end of its output. If the session ends first (``-x``, Ctrl-C), the background
pipeline is
stopped.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ood import repro as _repro

_repro.pin()  # this process and every kernel and subprocess it starts compute with the pinned ISA and threads

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
DVC = (sys.executable, "-m", "dvc")
#: Seconds the background ``dvc repro`` may take before it is stopped (a fresh run takes about 10 minutes).
PIPELINE_TIMEOUT_S = int(os.environ.get("OOD_PIPELINE_TIMEOUT_S", "2400"))
#: The -m expression of pyproject.toml's addopts: the full pipeline's tests are left out unless asked for.
DEFAULT_MARKEXPR = "not full_pipeline"
#: The methods the suite's one-seed run leaves out (the full run, ``-m ""``, trains every method). Each combines loss
#: terms and a sampler that methods it keeps train on their own: ``oe_grad`` is OE's term and GReg's gradient penalty,
#: ``energy_oe_sampling`` Energy-OE's term and GReg+'s sampler, ``bfm_greg`` BFM's background term and GReg's terms.
#: So every stage kind, every notebook, every loss term and the sampler still run and are compared byte for byte, and
#: every method the figures and the tour show is there. What the run no longer has: a fine-tune from BFM's checkpoint
#: (``bfm_greg``'s; the others start from CE's, through the same code). Leaving them out drops six of the run's 21
#: stages, three fine-tunes and three evaluates (what that saves: docs/reproducibility.md).
ONE_SEED_LEAVES_OUT = ("oe_grad", "energy_oe_sampling", "bfm_greg")
#: The throw-away copy the pipeline runs in (set when it starts).
PIPELINE_ROOT: Path | None = None

_bg: dict = {}

#: The notebooks the pipeline's stages execute (inputs without outputs; dvc.yaml).
STAGE_NOTEBOOKS = ("01_data", "02_published", "02_train", "03_evaluate", "04_tables", "05_figures")

# The stage notebooks run once, in the pipeline, which writes their executed copies to notebooks/executed/<profile>/;
# tests/test_notebooks.py compares those with the committed copies. nbval executes only the notebooks the pipeline
# does not run (the tour, the ablations).
collect_ignore = [f"notebooks/{n}.ipynb" for n in STAGE_NOTEBOOKS]
collect_ignore_glob = ["notebooks/executed/*"]


def quickstart_command(readme: Path = ROOT / "README.md") -> tuple[str, str]:
    """The README's Quickstart (its ```` ```bash quickstart```` block) split into its install part and the rest."""
    lines, inside = [], False
    for line in readme.read_text().splitlines():
        if line.strip() == "```bash quickstart":
            inside = True
        elif inside and line.startswith("```"):
            break
        elif inside:
            lines.append(line)
    command = " ".join(x.strip() for x in lines if x.strip())
    install, sep, rest = command.partition(" && ")
    if not sep or install != "bash scripts/install.sh":
        raise pytest.UsageError(f"README.md: the ```bash quickstart block must read 'bash scripts/install.sh && "
                                f"<command>', found {command!r}")
    return install, rest


def newcomer_env() -> dict:
    """This process's environment with the ``PATH`` a newcomer has: without this interpreter's folder (the
    install's ``.venv/bin``) and without ``VIRTUAL_ENV``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "OOD_PYTHON")}
    keep = [d for d in env.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != BIN.resolve()]
    env["PATH"] = os.pathsep.join(keep)
    return env


def needs_pipeline(item: pytest.Item) -> bool:
    return (item.path.suffix == ".ipynb" or "repro" in getattr(item, "fixturenames", ())
            or item.get_closest_marker("pipeline") is not None)


def dvc_available() -> bool:
    return importlib.util.find_spec("dvc") is not None


def pytest_configure(config):
    config.addinivalue_line("markers", "pipeline: reads the outputs of `dvc repro`; runs after it (conftest.py)")
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one); scripts/gpu_check.py runs "
                                       "them with `pytest -m cuda`")
    config.addinivalue_line("markers", "rehearsal: a GPU-machine or paper-profile path rehearsed on the CPU at toy "
                                       "size (`pytest -m rehearsal` runs them alone)")
    config.addinivalue_line("markers", "starts_background: starts processes that go on in the background while the "
                                       "pipeline's tests run; the tests that wait for them run last (conftest.py)")
    config.addinivalue_line("markers", "full_pipeline: compares the pipeline's run of every seed with the committed "
                                       "results; selecting one makes the suite run the whole pipeline instead of seed "
                                       "0 alone (`pytest -m \"\"` runs every test; docs/maintainers.md)")
    config.addinivalue_line("markers", "slow: a unit test that takes more than about 10 s on a 2-core CPU (real data, "
                                       "whole notebooks, toy pipelines); the fast lane, `pytest tests -m \"not "
                                       "pipeline and not slow and not rehearsal\"`, leaves them out")


@pytest.hookimpl(tryfirst=True)
def pytest_itemcollected(item):
    """Every test that needs the pipeline carries the ``pipeline`` marker (a notebook, a test taking ``repro``), so
    that ``-m "not pipeline"`` leaves them all out, and with them the background ``dvc repro``."""
    if needs_pipeline(item) and item.get_closest_marker("pipeline") is None:
        item.add_marker(pytest.mark.pipeline)


def suite_order(item: pytest.Item) -> int:
    """Where a test runs in the session: 0 the unit tests; 1 a test marked ``starts_background``, which starts
    processes of its own that go on in the background (the paper profiles' rehearsal: three ``dvc repro``); 2 the
    tests that need the pipeline (mostly one process each, so the background processes have a core to run on); 3 the
    tests that wait for those background processes (they take the ``rehearsals`` fixture)."""
    if item.get_closest_marker("starts_background") is not None:
        return 1
    if needs_pipeline(item):
        return 2
    return 3 if "rehearsals" in getattr(item, "fixturenames", ()) else 0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """The tests in :func:`suite_order`, each group in its collected order: the tests that need the pipeline after
    the unit tests and the start of the background processes, those that wait for them last. Without DVC the
    pipeline's tests are skipped."""
    later = [i for i in items if needs_pipeline(i)]
    if later and not dvc_available():
        skip = pytest.mark.skip(reason=f"DVC is not importable by {sys.executable}: pip install -e '.[test]' "
                                       "installs it (the pipeline's tests run `python -m dvc`)")
        for i in later:
            i.add_marker(skip)
    items.sort(key=suite_order)   # stable: the collected order within each group


def _wanted(config) -> bool:
    return not config.option.collectonly and dvc_available()


def full_pipeline_wanted(items) -> bool:
    """The full pipeline (every seed) runs when a selected test is marked ``full_pipeline``; else seed 0 alone."""
    return any(i.get_closest_marker("full_pipeline") is not None for i in items)


def pytest_sessionstart(session):
    config = session.config
    if (config.args_source == pytest.Config.ArgsSource.TESTPATHS and _wanted(config)
            and config.option.markexpr.replace(" ", "") == DEFAULT_MARKEXPR.replace(" ", "")):
        _start_pipeline(full=False)  # the whole suite: its notebooks need the pipeline; collecting takes 10 s more


def pytest_collection_finish(session):
    needed = _wanted(session.config) and any(needs_pipeline(i) for i in session.items)
    full = full_pipeline_wanted(session.items)
    if "proc" in _bg and (not needed or full != _bg["full"]):  # started at session start, but -k/-m said otherwise
        _stop(_bg.pop("proc"))
        _restore_priority()
    if needed and "proc" not in _bg:
        _start_pipeline(full=full)


def _copy_checkout() -> Path:
    """The working tree (tracked + untracked files git does not ignore) and .git, in a new temporary folder."""
    dest = Path(tempfile.mkdtemp(prefix="ood-pipeline-"))
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(ROOT / ".git", dest / ".git", symlinks=True)
    cache = ROOT / ".dvc" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    with open(dest / ".dvc" / "config.local", "w") as f:  # share the checkout's cache (and run cache)
        f.write(f"[cache]\n    dir = {cache}\n")
    return dest


def _start_pipeline(full: bool = False) -> None:
    global PIPELINE_ROOT
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise pytest.UsageError("the pipeline's tests cannot run under pytest-xdist workers (each would start its "
                                "own `dvc repro`); run them without -n, or deselect them with -m 'not pipeline'")
    PIPELINE_ROOT = _copy_checkout()
    _bg["full"] = full
    if not full:  # seed 0 alone: the copy's params.yaml says so (tests/test_pipeline.py checks it against the golden)
        params = PIPELINE_ROOT / "params.yaml"
        params.write_text(one_seed_params(params.read_text()))
    # The copy's data root (git-ignored, so not copied) is the checkout's: a unit test loading real data under
    # OOD_ROOT (ood.pipeline.paths) then unpacks ../shared/data once per checkout, not once more in each copy.
    data = ROOT / "data"
    data.mkdir(exist_ok=True)
    (PIPELINE_ROOT / "data").symlink_to(data, target_is_directory=True)
    os.environ["OOD_ROOT"] = ENV["OOD_ROOT"] = str(PIPELINE_ROOT)
    env = {**newcomer_env(), "OOD_ROOT": str(PIPELINE_ROOT)}
    venv = BIN.parent
    if (venv / "pyvenv.cfg").is_file():  # as in a clone where scripts/install.sh ran: the copy's .venv is the install
        (PIPELINE_ROOT / ".venv").symlink_to(venv, target_is_directory=True)
        cmd = ["bash", "-c", quickstart_command()[1]]
        _bg["quickstart"] = cmd[2]
    else:
        env["OOD_PYTHON"] = sys.executable
        cmd = [*DVC, "repro"]
    log = tempfile.NamedTemporaryFile("w+", prefix="dvc-repro-", suffix=".log", delete=False)
    cpus = _split_cpus()
    _bg.update(log=log, start=time.monotonic(), env=env, proc=subprocess.Popen(
        cmd, cwd=PIPELINE_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus[0])) if cpus else None))
    if cpus:  # the unit tests on the other core(s) until the pipeline ends (_restore_priority gives them all back)
        _bg["affinity"] = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus[1])
    try:
        import torch

        _bg["threads"] = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:  # Linux: run only when a core would otherwise idle; elsewhere the lowest nice value
        _bg["policy"] = os.sched_getscheduler(0)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        if hasattr(os, "nice"):
            _bg["nice"] = os.nice(0)
            os.nice(19)


def one_seed_params(text: str) -> str:
    """The text of params.yaml for the suite's one-seed run: ``seeds: [0]``, and the methods of
    :data:`ONE_SEED_LEAVES_OUT` gone from ``pipeline.finetune`` and ``pipeline.evaluate`` (line edits, so that every
    other line and comment stays; pytest.UsageError when params.yaml no longer has the lines they edit)."""
    text, n = re.subn(r"^seeds: \[[^\]]*\]", "seeds: [0]", text, count=1, flags=re.M)
    if n != 1:
        raise pytest.UsageError("params.yaml: no `seeds: [...]` line for the suite's one-seed run to set")
    for m in ONE_SEED_LEAVES_OUT:
        text, n = re.subn(rf"^    {m}: \w+\n", "", text, count=1, flags=re.M)
        text, k = re.subn(rf"^(  evaluate: \[.*?)\b{m}, |^(  evaluate: \[.*?), {m}\]",
                          lambda g: g.group(1) or g.group(2) + "]", text, count=1, flags=re.M)
        if n != 1 or k != 1:
            raise pytest.UsageError(f"params.yaml: no `    {m}: <init>` line under pipeline.finetune, or {m} not in "
                                    "the one-line `  evaluate: [...]` list, for the suite's one-seed run to leave out "
                                    "(conftest.ONE_SEED_LEAVES_OUT)")
    return text


def _split_cpus() -> tuple[set[int], set[int]] | None:
    """The cores of this process split in two (the pipeline's, the unit tests'), or None with fewer than two or
    where affinity cannot be set (not Linux).

    Measured on our 2-core AMD EPYC VM (2026-12-06): a stage of the pipeline (the evaluate notebook, 19 s alone) took
    57 to 80 s beside one busy process at Linux's ``SCHED_IDLE`` priority on the other core, but 31 s when each had a
    core of its own; the background ``dvc repro`` of the suite took 676 s against 240 s alone. The lowest priority
    alone does not keep the unit tests out of the pipeline's way, a core of their own does."""
    if not hasattr(os, "sched_setaffinity"):   # pragma: no cover - not Linux
        return None
    try:
        mine = sorted(os.sched_getaffinity(0))
    except OSError:   # pragma: no cover
        return None
    if len(mine) < 2 or os.environ.get("OOD_SUITE_SPLIT_CORES", "1") == "0":
        return None
    half = len(mine) // 2
    return set(mine[:len(mine) - half]), set(mine[len(mine) - half:])


def wait_for_pipeline() -> subprocess.CompletedProcess:
    """Wait for the background ``dvc repro``; its output as a CompletedProcess, or AssertionError if it failed."""
    if "result" not in _bg:
        if "proc" not in _bg:  # collection starts it when a selected test needs it; any other caller, here
            _start_pipeline(full=True)
        proc, log = _bg["proc"], _bg["log"]
        timed_out = False
        while proc.poll() is None:   # nothing else runs now: the pipeline gets every core (again: new processes)
            _widen_pipeline()
            left = PIPELINE_TIMEOUT_S - (time.monotonic() - _bg["start"])
            if left <= 0:
                timed_out = True
                _stop(proc)
                break
            try:
                proc.wait(timeout=min(left, 5))
            except subprocess.TimeoutExpired:
                pass
        log.flush()
        log.seek(0)
        out = log.read()
        if timed_out:
            out += (f"\n[conftest] dvc repro timed out after {PIPELINE_TIMEOUT_S} s (OOD_PIPELINE_TIMEOUT_S) and was "
                    "stopped")
        _bg["end"] = time.monotonic()
        _bg["result"] = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
        _restore_priority()
    res = _bg["result"]
    if res.returncode != 0:
        raise AssertionError(f"dvc repro exited {res.returncode} in {PIPELINE_ROOT} (run `dvc repro` by hand to see "
                             f"the stage that failed):\n{res.stdout[-3000:]}")
    return res


def lend_idle_cores(pids) -> bool:
    """For a test waiting on processes of its own (call it in the wait loop): once the background pipeline has
    finished (or when none runs), the session gets its cores and priority back (:func:`_restore_priority`) and each
    of ``pids``, its descendants and their threads may run on all of them (:func:`widen_tree`). False while the
    pipeline still runs: its core is taken, and ``pids`` are then widened when it is done (:func:`_restore_priority`).
    A failed pipeline is reported by the tests that need it, not here."""
    _bg.setdefault("borrowers", set()).update(pids)
    if "proc" in _bg and "result" not in _bg:
        if _bg["proc"].poll() is None:
            return False
        try:
            wait_for_pipeline()   # records the result and restores this process's cores, threads and priority
        except AssertionError:
            pass
    if hasattr(os, "sched_getaffinity"):
        cores = set(_bg.get("affinity") or os.sched_getaffinity(0))   # the session's cores
        for pid in pids:
            widen_tree(pid, cores)
    return True


def _widen_pipeline() -> None:
    """Every core of the session for the pipeline (the ``dvc repro`` process and each of its descendants, each of
    their threads) while the suite waits for it: once the unit tests have run, the pipeline's core no longer has to
    be shared. A process started after this call inherits the wider set from its parent; one started during it may
    be missed, which costs time, not bits (the pinned thread count, not the cores, decides the bits: ood/repro.py)."""
    if "affinity" in _bg:   # else the cores were not split
        widen_tree(_bg["proc"].pid, _bg["affinity"])


def widen_tree(root: int, cores: set[int]) -> None:
    """Let process ``root``, each of its descendants and each of their threads run on ``cores`` (Linux)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    tree, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    for pid in tree:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), cores)
        except OSError:   # it ended meanwhile
            continue


def _restore_priority() -> None:
    """Back to the thread count, the cores and the scheduling the session started with; the processes a waiting test
    registered (:func:`lend_idle_cores`) get every core too."""
    if "affinity" in _bg:
        try:
            os.sched_setaffinity(0, cores := _bg.pop("affinity"))
        except OSError:  # pragma: no cover
            pass
        else:
            for pid in _bg.get("borrowers", ()):
                widen_tree(pid, cores)
    if "threads" in _bg:
        import torch

        torch.set_num_threads(_bg.pop("threads"))
    if "policy" in _bg:
        try:
            os.sched_setscheduler(0, _bg.pop("policy"), os.sched_param(0))
        except OSError:  # pragma: no cover - leaving SCHED_IDLE needs no privilege on Linux
            pass
    # a raised nice value cannot be lowered again without privileges; elsewhere it stays (documented above)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


@pytest.fixture(scope="session")
def repro():
    """``dvc repro`` in the throw-away copy of the checkout (:data:`PIPELINE_ROOT`); its output."""
    return wait_for_pipeline()


@pytest.fixture(scope="session")
def pipeline_root(repro) -> Path:
    """The copy of the checkout the pipeline ran in, after ``dvc repro`` has finished there."""
    return PIPELINE_ROOT


def pytest_runtest_setup(item):
    if needs_pipeline(item) and "repro" not in getattr(item, "fixturenames", ()):
        wait_for_pipeline()
    elif "proc" in _bg and "result" not in _bg and _bg["proc"].poll() is not None:
        # the pipeline finished while unit tests remain: they get both cores and the usual priority back now
        try:
            wait_for_pipeline()
        except AssertionError:
            pass  # its failure is reported by the tests that need it


def pytest_sessionfinish(session, exitstatus):
    proc = _bg.get("proc")
    if proc is not None and proc.poll() is None:
        _stop(proc)
    if "log" in _bg:
        _bg["log"].close()
        Path(_bg["log"].name).unlink(missing_ok=True)
    if PIPELINE_ROOT is not None and not os.environ.get("OOD_KEEP_PIPELINE_COPY"):
        shutil.rmtree(PIPELINE_ROOT, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """How long the background ``dvc repro`` took (wall, from its start to when the suite saw it end), for the
    maintainers' timings of the suite (docs/reproducibility.md)."""
    if "result" in _bg and "end" in _bg:
        seeds = "every seed" if _bg["full"] else "seed 0 alone"
        terminalreporter.write_line(f"background dvc repro ({seeds}): {_bg['end'] - _bg['start']:.0f} s")
