"""The DVC pipeline runs in the background while the unit tests run.

``dvc repro`` of the default profile takes about 9 minutes on a 2-core CPU, much of it in one core (a Python
process and a Jupyter kernel start per stage, imports, notebook I/O). When the collected tests include one that
needs the pipeline's outputs, ``dvc repro`` runs in the background - from the start of the session when pytest runs
the whole suite (no paths given: what the README's test command does), else from the end of collection - and:

* the tests that need it run last, each after ``dvc repro`` has finished: a test taking the ``repro`` fixture, a
  test marked ``pipeline``, and every notebook under nbval (they read the pipeline's checkpoints and scores);
* every other test runs first, meanwhile, with one torch thread and at the lowest CPU priority (Linux's
  ``SCHED_IDLE``, else ``nice 19``): the pipeline keeps both cores when it computes, and the unit tests fill the
  gaps when it does not. The thread count is restored when the pipeline is waited for; the priority stays low for
  the rest of the session, which costs nothing once nothing else runs.

A failed ``dvc repro`` fails the ``repro`` fixture and every test that needs it, with the end of its output. If the
session ends first (``-x``, Ctrl-C), the background pipeline is stopped; DVC reruns the interrupted stage next time.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
PIPELINE_TIMEOUT_S = 1800

_bg: dict = {}


def needs_pipeline(item: pytest.Item) -> bool:
    return (item.path.suffix == ".ipynb" or "repro" in getattr(item, "fixturenames", ())
            or item.get_closest_marker("pipeline") is not None)


def pytest_configure(config):
    config.addinivalue_line("markers", "pipeline: reads the outputs of `dvc repro`; runs after it (conftest.py)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """The tests that need the pipeline go last, in their collected order."""
    later = [i for i in items if needs_pipeline(i)]
    if later:
        items[:] = [i for i in items if not needs_pipeline(i)] + later


def pytest_sessionstart(session):
    config = session.config
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS and not config.option.collectonly:
        _start_pipeline()  # the whole suite: its notebooks need the pipeline; collecting takes 10 s more


def pytest_collection_finish(session):
    needed = not session.config.option.collectonly and any(needs_pipeline(i) for i in session.items)
    if needed and "proc" not in _bg:
        _start_pipeline()
    elif not needed and "proc" in _bg:  # started at session start, but -k/-m deselected every test that needs it
        _stop(_bg.pop("proc"))
        _restore_threads()


def _start_pipeline() -> None:
    log = tempfile.NamedTemporaryFile("w+", prefix="dvc-repro-", suffix=".log", delete=False)
    _bg.update(log=log, start=time.monotonic(), proc=subprocess.Popen(
        [str(BIN / "dvc"), "repro"], cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True))
    try:
        import torch

        _bg["threads"] = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:  # Linux: run only when a core would otherwise idle; elsewhere the lowest nice value
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        if hasattr(os, "nice"):
            os.nice(19)


def wait_for_pipeline() -> subprocess.CompletedProcess:
    """Wait for the background ``dvc repro``; its output as a CompletedProcess, or AssertionError if it failed."""
    if "result" not in _bg:
        if "proc" not in _bg:  # collection starts it when a selected test needs it; any other caller, here
            _start_pipeline()
        proc, log = _bg["proc"], _bg["log"]
        left = PIPELINE_TIMEOUT_S - (time.monotonic() - _bg["start"])
        try:
            proc.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            _stop(proc)
        log.flush()
        log.seek(0)
        _bg["result"] = subprocess.CompletedProcess(proc.args, proc.returncode, log.read(), "")
        _restore_threads()
    res = _bg["result"]
    if res.returncode != 0:
        raise AssertionError(f"dvc repro exited {res.returncode} (run it by hand to see the stage that failed):\n"
                             f"{res.stdout[-3000:]}")
    return res


def _restore_threads() -> None:
    if "threads" in _bg:
        import torch

        torch.set_num_threads(_bg.pop("threads"))


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
    """``dvc repro`` of the checkout (the whole pipeline from a fresh clone, a no-op when up to date)."""
    return wait_for_pipeline()


def pytest_runtest_setup(item):
    if needs_pipeline(item) and "repro" not in getattr(item, "fixturenames", ()):
        wait_for_pipeline()


def pytest_sessionfinish(session, exitstatus):
    proc = _bg.get("proc")
    if proc is not None and proc.poll() is None:
        _stop(proc)
    if "log" in _bg:
        _bg["log"].close()
        Path(_bg["log"].name).unlink(missing_ok=True)
