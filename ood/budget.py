"""Advance a DVC pipeline for at most N minutes: a long run lands in pieces.

``python -m ood.budget [DVC_YAML] --minutes N`` runs the stages that ``dvc repro`` would run, in dependency order, one
``dvc repro --single-item`` at a time, and does not start a stage whose estimate says it would end after the
budget. After each stage DVC has written its lock entry and outputs, so the tree can be committed whenever the
command stops (budget spent, a stage failed, Ctrl-C between stages): every finished stage is recorded, and the next
call, in this clone or in a fresh clone of the commit, continues with the rest. It prints what it ran (with each
stage's wall time), what is left, and the estimate for the rest. ``--dry`` prints the plan and runs nothing.

Estimates come from measured wall times, recorded in ``stage_times.csv`` beside the ``dvc.yaml`` (one row per
finished stage: ``stage, seconds, cpu, date``; the lock does not pin them, so recording one never makes a stage
stale). A stage's estimate is the median of its rows measured on this CPU (:func:`cpu_name`), else of its rows on
any CPU, else of the other stages of its ``foreach`` group (``train@ce`` stands for ``train@bfm``), else
``--unknown-minutes`` (default 30, the longest a stage of this project's pipelines is meant to take on our slowest
CPU). An estimate is an estimate: a stage that runs longer than it said is not stopped, and the overrun is printed.

A stage interrupted half-way (Ctrl-C, a lost machine) loses only itself: DVC records a stage when it has finished.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["cpu_name", "pending_stages", "stage_states", "status_markdown", "read_times", "estimate", "plan", "advance",
           "main", "TIMES_FILE", "STATES"]

#: The measured stage times, beside each dvc.yaml.
TIMES_FILE = "stage_times.csv"
_FIELDS = ["stage", "seconds", "cpu", "date"]


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with what tells our machines apart (several report only "AMD EPYC"):
    vendor, family and model numbers, and whether it has AVX-512; else the platform's processor string."""
    try:
        info = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
        flags = info.get("flags", "").split()
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, "
                f"model {info.get('model', '?')}, {isa})")
    except OSError:
        import platform

        return platform.processor() or platform.machine()


def pending_stages(dvc_yaml: Path) -> list[str]:
    """The stages of ``dvc_yaml`` that ``dvc repro`` would run, in an order it would run them: those whose code,
    parameters, dependencies or outputs changed (DVC's own check), and every stage downstream of one of them.
    (``dvc repro --dry`` cannot tell: it fails on a dependency that an upstream stage has not yet written.)"""
    import networkx as nx
    from dvc.repo import Repo

    dvc_yaml = Path(dvc_yaml).resolve()
    with Repo(str(dvc_yaml.parent)) as repo:
        stages = [st for st in repo.index.stages if Path(st.path).resolve() == dvc_yaml]
        with repo.lock:
            changed = [st for st in stages if st.changed()]
        graph = repo.index.graph.subgraph(stages)   # an edge runs from a stage to a stage it depends on
        pending = set(changed)
        for st in changed:
            pending |= nx.ancestors(graph, st)       # the stages that depend on it, directly or not
        order = list(reversed(list(nx.lexicographical_topological_sort(graph, key=lambda st: st.name))))
        return [st.name for st in order if st in pending]


#: What :func:`stage_states` says of a stage.
STATES = {
    "done": "ran on the current code, parameters and inputs; its outputs are here",
    "stale": "ran, but its code, parameters or inputs have changed since: its outputs are not what the current code "
             "makes",
    "cached": "ran on the current code, parameters and inputs; its outputs are in the DVC cache of the machine that "
              "ran it (`dvc push` to a remote publishes them), not in git",
    "not run": "has no lock entry",
}


def stage_states(dvc_yaml: Path) -> dict[str, str]:
    """Each stage of ``dvc_yaml`` (in dependency order) and its state, one of :data:`STATES`, from DVC's own status
    of the stage against its lock entry: a changed command, dependency (code, inputs) or parameter, or a committed
    output that differs from its lock entry, makes it ``stale``. Whether this clone holds the DVC-cached outputs does
    not matter (a fresh clone does not): a missing cached output, or a missing input that another stage writes, is
    no change; a stage with cached outputs is ``cached``, one whose outputs are all committed ``done``. So the states
    are the same in the clone that ran the stages and in a fresh clone of its commit."""
    import networkx as nx
    import yaml
    from dvc.repo import Repo

    dvc_yaml = Path(dvc_yaml).resolve()
    lock_file = dvc_yaml.with_name("dvc.lock")
    locked = set((yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})) if lock_file.is_file() else set()
    with Repo(str(dvc_yaml.parent)) as repo:
        stages = [st for st in repo.index.stages if Path(st.path).resolve() == dvc_yaml]
        graph = repo.index.graph.subgraph(stages)
        order = list(reversed(list(nx.lexicographical_topological_sort(graph, key=lambda st: st.name))))
        made = {str(o.def_path) for s in stages for o in s.outs}
        states = {}
        with repo.lock:
            for st in order:
                if st.name not in locked:
                    states[st.name] = "not run"
                    continue
                changes = st.status().get(st.addressing, [])
                cached = {str(o.def_path) for o in st.outs if o.use_cache}
                kinds = set()
                for c in changes:
                    for kind, what in (c.items() if isinstance(c, dict) else [(c, None)]):
                        gone = isinstance(what, dict) and all(v in ("deleted", "not in cache") for v in what.values())
                        if kind == "changed deps" and gone and all(_made_by_stages(k, made) for k in what):
                            continue   # an input another stage writes, DVC-cached and not in this clone
                        if kind == "changed outs" and gone and set(what) <= cached:
                            continue   # its own DVC-cached outputs, not in this clone
                        kinds.add(kind)
                states[st.name] = "stale" if kinds else "cached" if cached else "done"
        return states


def _made_by_stages(path: str, outs: set[str]) -> bool:
    """Whether ``path`` is a stage's output, lies inside one, or is a folder that holds some (``cache/<profile>``,
    which the tables stage reads, holds each evaluate stage's ``cache/<profile>/<method>``)."""
    p = path.rstrip("/")
    return any(p == o or p.startswith(o + "/") or o.startswith(p + "/") for o in outs)


def status_markdown(dvc_yaml: Path) -> str:
    """A Markdown table of :func:`stage_states`, stages grouped by state (what the README's status block holds)."""
    states = stage_states(dvc_yaml)
    lines = ["| state | stages |", "| --- | --- |"]
    for state in STATES:
        names = [n for n, s in states.items() if s == state]
        if names:
            lines.append(f"| {state} | {', '.join(f'`{n}`' for n in names)} |")
    return "\n".join(lines)


def read_times(path: Path) -> list[dict]:
    """The rows of a ``stage_times.csv`` (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seconds"] = float(r["seconds"])
    return rows


def _record(path: Path, stage: str, seconds: float, cpu: str) -> None:
    new = not Path(path).is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_FIELDS, lineterminator="\n")
        if new:
            w.writeheader()
        w.writerow({"stage": stage, "seconds": f"{seconds:.1f}", "cpu": cpu,
                    "date": datetime.date.today().isoformat()})


@dataclass
class Estimate:
    seconds: float
    basis: str  # what it rests on, printed beside it


def estimate(stage: str, times: list[dict], cpu: str, unknown_s: float) -> Estimate:
    """The estimate of ``stage`` (see the module docstring for the order of the sources)."""
    mine = [r["seconds"] for r in times if r["stage"] == stage]
    here = [r["seconds"] for r in times if r["stage"] == stage and r["cpu"] == cpu]
    if here:
        return Estimate(statistics.median(here), f"median of {len(here)} run(s) on this CPU")
    if mine:
        return Estimate(statistics.median(mine), f"median of {len(mine)} run(s) on other CPUs")
    group = stage.split("@")[0] + "@" if "@" in stage else None
    kin = [r["seconds"] for r in times if group and r["stage"].startswith(group)]
    if kin:
        return Estimate(statistics.median(kin), f"median of {len(kin)} run(s) of {group}*")
    return Estimate(unknown_s, "never measured")


def plan(stages: list[str], times: list[dict], cpu: str, unknown_s: float) -> list[tuple[str, Estimate]]:
    return [(s, estimate(s, times, cpu, unknown_s)) for s in stages]


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s"


def advance(dvc_yaml: Path, minutes: float, *, unknown_minutes: float = 30.0, dry: bool = False,
            out=sys.stdout) -> int:
    """Run the pending stages of ``dvc_yaml`` in order while each one's estimate fits in what is left of
    ``minutes``; return 0 when every stage is done or the budget stopped it, 1 when a stage failed."""
    dvc_yaml = Path(dvc_yaml).resolve()
    if not dvc_yaml.is_file():
        raise SystemExit(f"error: {dvc_yaml} does not exist; name a pipeline's dvc.yaml (e.g. "
                         "pipelines/cifar10-cpu/dvc.yaml)")
    if minutes <= 0:
        raise SystemExit(f"error: --minutes must be > 0, got {minutes}")
    times_file = dvc_yaml.parent / TIMES_FILE
    cpu, budget, start = cpu_name(), minutes * 60.0, time.monotonic()
    print(f"budget {_fmt(budget)} for {dvc_yaml.name} in {dvc_yaml.parent} on {cpu}", file=out)
    todo = plan(pending_stages(dvc_yaml), read_times(times_file), cpu, unknown_minutes * 60.0)
    if not todo:
        print("nothing to do: every stage is up to date", file=out)
        return 0
    ran, status = [], 0
    while todo:
        stage, est = todo[0]
        left = budget - (time.monotonic() - start)
        if dry or est.seconds > left:
            break
        print(f"running {stage} (estimate {_fmt(est.seconds)}, {est.basis}; {_fmt(left)} of the budget left)",
              file=out, flush=True)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", f"{dvc_yaml}:{stage}"],
                           cwd=dvc_yaml.parent)
        took = time.monotonic() - t0
        if p.returncode != 0:
            print(f"error: stage {stage} failed after {_fmt(took)} (exit {p.returncode}); the stages before it are "
                  "recorded in the lock; fix it and run this command again", file=out)
            status = 1
            break
        _record(times_file, stage, took, cpu)
        over = f", {_fmt(took - est.seconds)} over its estimate" if took > est.seconds else ""
        ran.append((stage, took))
        print(f"done {stage} in {_fmt(took)}{over}", file=out, flush=True)
        # what is left may change once a stage has run (DVC decides on the new outputs): ask again
        todo = plan(pending_stages(dvc_yaml), read_times(times_file), cpu, unknown_minutes * 60.0)
    spent = time.monotonic() - start
    print(f"ran {len(ran)} stage(s) in {_fmt(spent)}: " + (", ".join(f"{s} {_fmt(t)}" for s, t in ran) or "none"),
          file=out)
    if todo:
        rest = sum(e.seconds for _, e in todo)
        print(f"left {len(todo)} stage(s), estimated {_fmt(rest)}:", file=out)
        for s, e in todo:
            print(f"  {s}: {_fmt(e.seconds)} ({e.basis})", file=out)
        if not dry and status == 0:
            print(f"the next stage, {todo[0][0]}, does not fit in the {_fmt(budget - spent)} left; commit what ran "
                  f"(git add -A {os.path.relpath(dvc_yaml.parent)} results figures notebooks runs; git commit) "
                  "and run this command again to continue", file=out)
    else:
        print("every stage is up to date", file=out)
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ood.budget", description=__doc__.split("\n\n")[0])
    ap.add_argument("dvc_yaml", nargs="?", default="dvc.yaml", help="the pipeline (default: dvc.yaml, synthetic)")
    ap.add_argument("--minutes", type=float, help="the budget: no stage starts that would end after it")
    ap.add_argument("--status", action="store_true", help="print each stage's state (done, stale, outputs "
                                                              "elsewhere, not run) as a Markdown table; run nothing")
    ap.add_argument("--unknown-minutes", type=float, default=30.0,
                    help="the estimate of a stage never measured (default 30)")
    ap.add_argument("--dry", action="store_true", help="print the plan and the estimates; run nothing")
    args = ap.parse_args(argv)
    if args.status:
        print(status_markdown(Path(args.dvc_yaml)))
        return 0
    if args.minutes is None:
        ap.error("--minutes is required (or --status)")
    return advance(Path(args.dvc_yaml), args.minutes, unknown_minutes=args.unknown_minutes, dry=args.dry)


if __name__ == "__main__":
    sys.exit(main())
