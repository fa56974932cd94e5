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
    runs = steps["profile"]["runs"]
    assert runs["greg"]["steps_per_epoch"] == 2 and all(r["train_s"] > 0 for r in runs.values())
    assert "| profile | ok |" in (out / "summary.md").read_text()


def test_a_bad_step_name_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--steps", "profile,bench"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu_check: unknown step(s) bench; allowed: cuda_tests, train_speed, profile"
