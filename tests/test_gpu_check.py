"""scripts/gpu_check.py, rehearsed on the CPU at toy size (marked ``rehearsal``), so that the command a GPU owner runs
cannot rot: every step runs, the CUDA tests say they were skipped, and the results folder carries its provenance."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import ROOT
from ood.data import fetching

pytestmark = pytest.mark.rehearsal
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def test_the_gpu_script_runs_every_step_at_toy_size(tmp_path):
    shared = fetching.SHARED_DATA
    if not (shared / "tinyimagenet32-train.tar.xz").is_file():
        pytest.fail(f"{shared} (../shared/data beside the checkout) is needed for the rehearsal's CIFAR and "
                    "TinyImageNet-32 files")
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--toy", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = json.loads((out / "provenance.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert prov["commit"] == head and prov["torch"] == torch.__version__ and prov["toy"] is True
    steps = json.loads((out / "steps.json").read_text())
    assert list(steps) == ["cuda_tests", "train_speed", "profile"]
    if not torch.cuda.is_available():
        assert steps["cuda_tests"]["status"] == "skipped" and "no CUDA" in steps["cuda_tests"]["why"]
    assert steps["train_speed"]["status"] == "ok" and steps["profile"]["status"] == "ok"
    speed = json.loads((out / "train_speed.json").read_text())
    assert speed["size"] == "tiny" and speed["rows"] and speed["bf16_check"], "the speed table and the bf16 check ran"
    m = pd.read_csv(out / "profile" / "metrics.csv")
    assert set(m.method) == {"ce", "energy_oe", "greg"}
    assert set(m.scorer) == {"energy", "msp", "knn", "vim"}
    assert {"CIFAR-100 test (near-OOD)", "Textures (DTD, 10 categories)"} <= set(m.ood_set)
    assert m[["fpr95", "auroc"]].notna().all().all()
    assert steps["profile"]["ce"] == "trained here"   # --ce auto, and no published CE under ../shared/data
    runs = steps["profile"]["runs"]
    assert runs["greg"]["steps_per_epoch"] == 2 and all(r["train_s"] > 0 for r in runs.values())
    assert "| profile | ok |" in (out / "summary.md").read_text()


def test_a_bad_step_name_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--steps", "profile,bench"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu_check: unknown step(s) bench; allowed: cuda_tests, train_speed, profile"


def test_the_profile_step_takes_the_authors_ce_where_its_file_is(tmp_path, monkeypatch):
    """``--ce auto`` uses the published CE when its file (checked against the registry's SHA-256) is in
    ``<--shared>/checkpoints``, never downloads it, and falls back to training without it; ``--ce published``
    without it is the registry's one-line error; ``--ce train`` never looks."""
    import dataclasses
    import hashlib
    import importlib.util

    from ood import checkpoints
    from ood.data.fetching import DataMissingError
    from ood.data.registry import FileInfo

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(fetching, "DATA_ROOT", tmp_path / "root")
    monkeypatch.setattr(fetching, "SHARED_DATA", tmp_path / "no-shared")
    monkeypatch.delenv("OOD_MIRRORS", raising=False)
    payload = b"stand-in for the authors' file"
    entry = checkpoints.CHECKPOINTS[gpu_check.PUBLISHED_CE]
    closed = "http://127.0.0.1:9/nothing"    # were it downloaded, the test would fail at once
    monkeypatch.setitem(checkpoints.CHECKPOINTS, gpu_check.PUBLISHED_CE, dataclasses.replace(
        entry, file=FileInfo(entry.file.path, closed, "sha256:" + hashlib.sha256(payload).hexdigest(), "a test")))
    shared = tmp_path / "shared"
    args = gpu_check.build_parser().parse_args(["--out", str(tmp_path / "o"), "--shared", str(shared)])
    assert args.ce == "auto" and gpu_check.published_ce(args) is None
    args.ce = "published"
    with pytest.raises(DataMissingError, match="published checkpoint"):
        gpu_check.published_ce(args)
    (shared / "checkpoints").mkdir(parents=True)
    (shared / "checkpoints" / entry.file.path.split("/")[-1]).write_bytes(payload)
    for mode, want in (("auto", gpu_check.PUBLISHED_CE), ("published", gpu_check.PUBLISHED_CE), ("train", None)):
        args.ce = mode
        assert gpu_check.published_ce(args) == want, mode
