"""ood.budget on a small pipeline of its own: it stops within its budget, records what ran in the lock, and a fresh
clone of the commit continues where it stopped, rerunning nothing that had finished."""
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ood import budget

pytestmark = pytest.mark.skipif(__import__("importlib").util.find_spec("dvc") is None, reason="needs DVC")

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def sh(*args, cwd):
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}, timeout=300)
    assert p.returncode == 0, f"{args}: {p.stdout}\n{p.stderr}"
    return p.stdout


def _pipeline(root: Path, ran_log: Path) -> None:
    """Three stages a -> b -> c; each appends its name to ``ran_log`` (outside the repository) and writes its output,
    committed to git (cache: false) as cifar10-cpu's run folders are. c sleeps longer than what the budget leaves."""
    sh("git", "init", "-q", cwd=root)
    sh(sys.executable, "-m", "dvc", "init", "-q", cwd=root)
    stages = {"a": ("", 0.2), "b": ("a.txt", 0.2), "c": ("b.txt", 0.2)}
    lines = ["stages:"]
    for name, (dep, secs) in stages.items():
        lines += [f"  {name}:", f"    cmd: sleep {secs} && echo {name} >> {ran_log} && echo {name} > {name}.txt"]
        if dep:
            lines += ["    deps:", f"      - {dep}"]
        lines += ["    outs:", f"      - {name}.txt:", "          cache: false"]
    (root / "dvc.yaml").write_text("\n".join(lines) + "\n")
    # measured times as an earlier run on this CPU recorded them: c is estimated at 60 s
    cpu = budget.cpu_name()
    with open(root / budget.TIMES_FILE, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerows([["stage", "seconds", "cpu", "date"], ["a", "1.0", cpu, "2026-12-06"],
                     ["b", "1.0", cpu, "2026-12-06"], ["c", "60.0", cpu, "2026-12-06"]])
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-q", "-m", "pipeline", cwd=root)


def _advance(root: Path, minutes: float) -> tuple[str, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "ood.budget", "dvc.yaml", "--minutes", str(minutes)], cwd=root,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, time.monotonic() - t0


@pytest.mark.slow
def test_a_budgeted_run_stops_within_its_budget_and_a_fresh_clone_continues(tmp_path):
    repo, ran = tmp_path / "repo", tmp_path / "ran.log"
    repo.mkdir()
    _pipeline(repo, ran)
    out, took = _advance(repo, 0.5)   # 30 s: a and b fit, c's 60 s estimate does not
    assert took < 30, f"the budgeted run took {took:.1f} s of its 30 s"
    assert ran.read_text().split() == ["a", "b"]
    assert "ran 2 stage(s)" in out and "left 1 stage(s)" in out and "  c: 1 min 00 s" in out
    assert "the next stage, c, does not fit" in out
    lock = (repo / "dvc.lock").read_text()
    assert "  a:" in lock and "  b:" in lock and "  c:" not in lock
    times = budget.read_times(repo / budget.TIMES_FILE)
    assert [r["stage"] for r in times][-2:] == ["a", "b"]   # the new measurements, appended
    # land the piece, then continue on another machine: a fresh clone of the commit
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "a and b", cwd=repo)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    status = sh(sys.executable, "-m", "dvc", "status", cwd=clone)
    assert "a:" not in status and "b:" not in status and "c:" in status   # finished stages are up to date
    out, _ = _advance(clone, 5)
    assert ran.read_text().split() == ["a", "b", "c"], "the clone reran a finished stage"
    assert "ran 1 stage(s)" in out and "every stage is up to date" in out
    out, _ = _advance(clone, 5)
    assert "nothing to do" in out


def test_estimates_prefer_this_cpu_then_any_then_the_stage_group():
    rows = [{"stage": "train@ce", "seconds": 100.0, "cpu": "slow"}, {"stage": "train@ce", "seconds": 40.0, "cpu": "x"},
            {"stage": "train@ce", "seconds": 44.0, "cpu": "x"}, {"stage": "data", "seconds": 9.0, "cpu": "slow"}]
    assert budget.estimate("train@ce", rows, "x", 1800).seconds == 42.0
    assert budget.estimate("data", rows, "x", 1800).seconds == 9.0
    assert budget.estimate("train@bfm", rows, "x", 1800).seconds == 44.0   # the median of train@*
    assert budget.estimate("tables", rows, "x", 1800).seconds == 1800


def test_bad_budget_and_missing_pipeline_fail_with_one_line(tmp_path):
    for args, msg in ((["nope.yaml", "--minutes", "5"], "does not exist"),
                      (["dvc.yaml", "--minutes", "0"], "--minutes must be > 0")):
        (tmp_path / "dvc.yaml").write_text("stages: {}\n")
        p = subprocess.run([sys.executable, "-m", "ood.budget", *args], cwd=tmp_path, capture_output=True, text=True)
        assert p.returncode != 0 and msg in p.stderr
