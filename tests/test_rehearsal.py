"""Every paper profile (cifar10, cifar100, imagenet) rehearsed end to end on the CPU at toy size (marked ``rehearsal``).

Everything but the size is real: the toy files are in each set's official download format (tests/toy_archives.py),
served by a loopback HTTP server that the profile reaches through the mirror mechanism (``$OOD_MIRRORS``); their
checksums are injected for the test only (``$OOD_TEST_CHECKSUMS``, ood/data/registry.py), across the DVC stages'
processes; the pipeline is the checkout's ``dvc.yaml``, run by ``python -m dvc repro`` in a throw-away copy with an
empty data root (ImageNet, which cannot be downloaded, is laid out there as a folder tree). In the copy the profile
is shrunk (one epoch of two steps, small batches, a 36 px ImageNet input) and the pipeline trains ``ce`` from
scratch and fine-tunes ``greg`` (outliers and the gradient penalty) from it; every stage and every registered scorer
runs. One method per profile is evaluated (:data:`EVALUATE`): the networks of one profile share their architecture,
so a second evaluate stage would rehearse nothing new. Official URLs are never reached: every proxy variable
points at a closed loopback port.

CIFAR-10 and CIFAR-100 run their own pipelines (``pipelines/<profile>/dvc.yaml``; the root pipeline cannot select them,
since DVC refuses two dvc.yaml with one output). CIFAR-100's trains its own CE (``ce`` moved to ``pipeline.scratch``);
CIFAR-10's takes ``ce`` from the authors' published network (issue 39): the toy server also serves a WRN-40-2 with
random weights in the authors' layout (pytorch-ood's ``WideResNet``, saved under ``nn.DataParallel`` as a multi-GPU
run would), under the registry's file name, its digest injected for the test (``$OOD_TEST_CHECKPOINT_CHECKSUMS``);
``greg`` then fine-tunes from it.
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import toy_archives
import yaml

import conftest
from conftest import ROOT
from ood.data import registry
from ood.scorers import SCORERS

pytestmark = pytest.mark.rehearsal

PROFILES = ("cifar10", "cifar100", "imagenet")
#: Seconds the three pipelines may take (together about 95 s on a quiet 2-core CPU; the suite runs them at
#: idle priority).
REPRO_TIMEOUT_S = 1200
#: Requests the toy server answers before it refuses (a profile asks for at most 10 files).
MAX_REQUESTS = 100
METHODS = {"published": {}, "scratch": ["ce"], "finetune": {"greg": "ce"}}
#: The figure lists of params.yaml's ``pipeline.figures``; each shows the profile's evaluated method (:data:`EVALUATE`).
FIGURE_LISTS = ("scores", "feature_norms", "grad_norms")
#: The method each profile's pipeline evaluates (every registered scorer): CIFAR-10's CE is the authors' published
#: network, so its evaluation scores a converted checkpoint; the others score GReg's fine-tune. Every figure shows
#: the evaluated method (a figure leaves out a method that was not evaluated, ood.pipeline.FIGURES).
EVALUATE = {"cifar10": ["ce"], "cifar100": ["greg"], "imagenet": ["greg"]}
#: The profiles with a pipeline of their own (pipelines/<profile>/), and those rehearsed there from the authors' CE.
OWN_PIPELINE = ("cifar10", "cifar100")
PUBLISHED = {"cifar10": "energy_cifar10_wrn_pretrained"}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(www: Path):
    """A loopback HTTP server (127.0.0.1, port 0, a thread) serving ``www``: (base URL, request log, stop)."""
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *args):
            pass

        def do_GET(self):
            log.append(self.path)
            if len(log) > MAX_REQUESTS:
                self.send_error(503, "request budget of the toy server spent")
                return
            super().do_GET()

    srv = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop():
        srv.shutdown()
        srv.server_close()
        thread.join(5)

    return f"http://127.0.0.1:{srv.server_address[1]}", log, stop


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """The toy archives (one folder, ``www``) and their checksum file."""
    import hashlib
    import json

    from ood import checkpoints

    base = tmp_path_factory.mktemp("toy-mirror")
    table = toy_archives.build(base / "www")
    digests = {}
    for i, name in enumerate(PUBLISHED.values()):
        entry = checkpoints.CHECKPOINTS[name]
        path = base / "www" / Path(entry.file.path).name
        path.write_bytes(_authors_file(entry.num_classes, seed=i))
        digests[name] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    (base / "checkpoint-checksums.json").write_text(json.dumps(digests))
    return base / "www", toy_archives.write_checksums(table, base / "checksums.json")


def _authors_file(num_classes: int, seed: int) -> bytes:
    """The bytes of a WRN-40-2 state dict in the authors' layout (pytorch-ood's ``WideResNet``, under
    ``nn.DataParallel``: every key prefixed ``module.``), random weights."""
    import io

    import torch
    from pytorch_ood.model import WideResNet

    torch.manual_seed(seed)
    net = torch.nn.DataParallel(WideResNet(num_classes=num_classes, depth=40, widen_factor=2, drop_rate=0.3))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


@pytest.fixture(scope="session")
def rehearsals(toy, tmp_path_factory):
    """``dvc repro`` of every paper profile, each in its own copy with its own toy server, all started at once (a
    stage spends most of its time starting a kernel on one core); the tests wait for theirs. Session-scoped: the
    suite starts them after the unit tests and waits for them after the pipeline's tests (conftest.suite_order), and
    a module-scoped fixture would be torn down in between."""
    www, checks = toy
    runs, stops = {}, []
    try:
        for profile in PROFILES:
            copy = _copy_checkout(tmp_path_factory.mktemp(f"rehearsal-{profile}") / "repo")
            _prepare(copy, profile)
            url, log, stop = _serve(www)
            stops.append(stop)
            out = open(copy.parent / "dvc-repro.log", "w+")
            target = [f"pipelines/{profile}/dvc.yaml"] if profile in OWN_PIPELINE else []
            proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *target], cwd=copy,
                                    env=_env(url, checks, copy),
                                    stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            runs[profile] = {"copy": copy, "log": log, "proc": proc, "out": out, "start": time.monotonic(), "www": www}
        yield runs
    finally:
        for r in runs.values():
            if r["proc"].poll() is None:
                os.killpg(r["proc"].pid, signal.SIGKILL)
                r["proc"].wait()
            r["out"].close()
        for stop in stops:
            stop()


def _copy_checkout(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored) without its outputs, in a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    skip = ("results/", "figures/", "notebooks/executed/", "runs/", "cache/", "data/", "benchmarks/", "docs/")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(skip) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _toy_profile(block: dict, profile: str) -> dict:
    """The profile at toy size: one epoch of two steps and small batches per recipe, small evaluation batches and
    neighbour counts; ImageNet at 48 px (resize 56) and no DataLoader workers. Its data keys stay as they are."""
    for r in block["recipes"].values():
        r.update(epochs=1, steps_per_epoch=2, batch_size=8)
        if r.get("schedule") == "step":
            r["milestones"] = [1]
        if r.get("out_batch_size"):
            r["out_batch_size"] = 8
    block["evaluate"]["batch_size"] = 32
    block["evaluate"]["params"] = {**block["evaluate"].get("params", {}), "knn": {"k": 5}}
    if profile == "imagenet":
        block["benchmark"].update(image_size=36, resize=40, workers=0)
    return block


def _prepare(copy: Path, profile: str) -> None:
    prof = copy / "profiles" / f"{profile}.yaml"
    block = yaml.safe_load(prof.read_text())
    prof.write_text(yaml.safe_dump({profile: _toy_profile(block[profile], profile)}, sort_keys=False))
    own = profile in OWN_PIPELINE   # its own pipeline; CE the authors' network where PUBLISHED names one
    params_file = copy / "pipelines" / profile / "params.yaml" if own else copy / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    methods = {**METHODS, "evaluate": EVALUATE[profile],
               "figures": {fig: EVALUATE[profile] for fig in FIGURE_LISTS}}
    if profile in PUBLISHED:
        methods.update(published={"ce": PUBLISHED[profile]}, scratch=[])
    params.update(profile=profile, seeds=[0], seed_workers=1, device="cpu", pipeline=methods)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    # dvc.yaml names the figures stage's run folders (it cannot loop in deps): those of the reduced figure lists
    dvc_file = params_file.parent / "dvc.yaml"
    dvc = dvc_file.read_text()
    head, tail = dvc.split("  figures:\n", 1)
    shown = sorted({m for ms in methods["figures"].values() for m in ms})
    lines = [ln for ln in tail.split("\n") if not (ln.strip().startswith("- runs/${profile}/")
                                                 and ln.strip().endswith("/seeds"))]
    at = next(i for i, ln in enumerate(lines) if ln.strip() == "- results/${profile}/metrics.csv")
    lines[at:at] = [f"      - runs/${{profile}}/{m}/seeds" for m in shown]
    dvc_file.write_text(head + "  figures:\n" + "\n".join(lines))
    if profile == "imagenet":
        toy_archives.imagenet_tree(copy / "data")


def _env(url: str, checks: Path, copy: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OOD_PARAMS", "OOD_DATA_ROOT", "PYTHONPATH") and not k.lower().endswith("_proxy")}
    closed = "http://127.0.0.1:9"   # nothing listens there: an official URL would fail at once, not reach the network
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "OOD_ROOT": str(copy), registry.MIRRORS_ENV: url,
                registry.TEST_CHECKSUMS_ENV: str(checks), "OOD_DOWNLOAD_TIMEOUT": "10",
                "OOD_TEST_CHECKPOINT_CHECKSUMS": str(checks.parent / "checkpoint-checksums.json"),
                "OOD_THREADS": "1",   # three pipelines share the cores: one thread each, no oversubscription
                "http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed,
                "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"})
    return env


@pytest.mark.starts_background
def test_the_rehearsals_start_each_in_a_copy_and_on_a_server_of_its_own(rehearsals):
    """The three pipelines start here, right after the unit tests, and run on while the pipeline's tests do; the
    tests below wait for them, last in the suite (conftest.suite_order). Each has its own copy, without the
    checkout's outputs, and its own process."""
    assert set(rehearsals) == set(PROFILES)
    copies = [r["copy"] for r in rehearsals.values()]
    assert len(set(copies)) == len(PROFILES) and not any((c / "results").exists() for c in copies)
    assert len({r["proc"].pid for r in rehearsals.values()}) == len(PROFILES)
    conftest.lend_idle_cores([r["proc"].pid for r in rehearsals.values()])


@pytest.mark.parametrize("profile", PROFILES)
def test_paper_profile_runs_every_stage_from_its_official_formats(profile, rehearsals):
    run = rehearsals[profile]
    copy = run["copy"]
    assert not (copy.parent / "shared").exists(), "the copy must not see ../shared/data"
    # the suite's pipeline may still hold the other core: once it is done, the three pipelines get every core
    # (conftest.lend_idle_cores)
    while run["proc"].poll() is None and time.monotonic() - run["start"] < REPRO_TIMEOUT_S:
        conftest.lend_idle_cores([r["proc"].pid for r in rehearsals.values() if r["proc"].poll() is None])
        try:
            run["proc"].wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    if run["proc"].poll() is None:
        os.killpg(run["proc"].pid, signal.SIGKILL)
        run["proc"].wait()
    wall = time.monotonic() - run["start"]
    run["out"].seek(0)
    output = run["out"].read()
    assert run["proc"].returncode == 0, f"dvc repro of {profile} failed after {wall:.0f} s:\n{output[-4000:]}"
    print(f"{profile}: dvc repro done after {wall:.1f} s (the three profiles run at once)")

    block = yaml.safe_load((copy / "profiles" / f"{profile}.yaml").read_text())[profile]
    served = {p.lstrip("/") for p in run["log"]}
    want = {Path(registry.DATASETS[n].files[0].path).name
            for n in [*block["benchmark"]["ood"].values(), block["benchmark"].get("aux"), block["benchmark"]["id"]]
            if n in registry.DATASETS and registry.DATASETS[n].files and registry.DATASETS[n].files[0].checksum}
    assert want and want <= served, f"not fetched from the toy mirror: {sorted(want - served)}"

    res = copy / "results" / profile
    data = pd.read_csv(res / "data.csv")
    assert set(data.role) == {"id-train", "id-test", "ood", "aux"} and (data.n > 0).all()
    m = pd.read_csv(res / "metrics.csv")
    sets = set(block["benchmark"]["ood"]) | {"average"}
    per_seed = m[m.seed.astype(str) == "0"]
    got = set(zip(per_seed.method, per_seed.scorer, per_seed.ood_set))
    expect = {(me, s, o) for me in EVALUATE[profile] for s in SCORERS for o in sets}
    assert expect <= got, f"missing metrics rows, e.g. {sorted(expect - got)[:5]}"
    assert per_seed[["fpr95", "auroc", "aupr_in", "aupr_out"]].notna().all().all()
    ref = (res / "reference.md").read_text()
    assert ref.strip() and "|" in ref, "the reference table (ours beside the papers') is empty"
    for name in ("accuracy.md", "fpr95.md", "auroc.md", "summary.json"):
        assert (res / name).stat().st_size > 0, name
    figs = copy / "figures" / profile
    for name in ("samples", "heatmap_fpr95", "histograms", "roc", "training_curves", "feature_norms",
                 "feature_norm_hist", "grad_norms"):
        assert (figs / f"{name}.png").stat().st_size > 10_000, name
    ce_stage = "02_published-ce" if profile in PUBLISHED else "02_train-ce"
    for stage in ("01_data", ce_stage, "02_train-greg", *(f"03_evaluate-{m}" for m in EVALUATE[profile]), "04_tables",
                  "05_figures"):
        assert (copy / "notebooks" / "executed" / profile / f"{stage}.ipynb").is_file(), stage
    if profile in PUBLISHED:
        _check_started_from_the_published_network(copy, profile, www=run["www"], served=served)


def _check_started_from_the_published_network(copy: Path, profile: str, *, www: Path, served: set) -> None:
    """CE's run is the served network (fetched from the toy mirror, every weight the file's, in our layout), nothing
    trained it, and GReg fine-tuned from it."""
    import torch

    from ood import checkpoints

    entry = checkpoints.CHECKPOINTS[PUBLISHED[profile]]
    fname = Path(entry.file.path).name
    assert f"checkpoints/{fname}" in served or fname in served, f"{fname} was not fetched from the mirror: {served}"
    theirs = torch.load(www / fname, map_location="cpu", weights_only=True)
    ours = torch.load(copy / "runs" / profile / "ce" / "seeds" / "0" / "model.pt", map_location="cpu",
                      weights_only=True)
    assert ours["meta"]["published"] == PUBLISHED[profile]
    assert torch.equal(ours["state_dict"]["fc.weight"], theirs["module.fc.weight"])
    # the key map of ood.checkpoints: block{g}.layer.{i} -> blocks.{6(g-1)+i}, convShortcut -> shortcut, bn1 -> bn
    assert torch.equal(ours["state_dict"]["blocks.6.shortcut.weight"],
                       theirs["module.block2.layer.0.convShortcut.weight"])
    assert torch.equal(ours["state_dict"]["bn.running_var"], theirs["module.bn1.running_var"])
    assert not (copy / "results" / profile / "history" / "ce.csv").exists(), "CE was trained, not taken"
    greg = torch.load(copy / "runs" / profile / "greg" / "seeds" / "0" / "model.pt", map_location="cpu",
                      weights_only=True)
    assert greg["meta"]["config"]["init"] == "ce"
    assert (copy / "results" / profile / "history" / "greg.csv").is_file()


def test_the_official_checksum_refuses_a_toy_file(toy, tmp_path):
    """Without the test hook the registry's checksums are the official ones, and a toy file fails them."""
    from ood.data import ChecksumError, fetching

    fi = registry.DATASETS["svhn"].files[0]
    assert fi.checksum == "md5:eb5a983be6a315427106f1b164d9cef3"
    shutil.copy(toy[0] / "test_32x32.mat", toy_file := tmp_path / "toy.mat")
    with pytest.raises(ChecksumError, match="expected eb5a983be6a315427106f1b164d9cef3"):
        fetching.verify(toy_file, fi)
