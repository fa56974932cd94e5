"""A saved detector needs ``ood`` alone: a fresh process loads one and scores images without importing any pipeline
module (params, profiles, benchmark, data readers and downloads, training and evaluation runs), and the detector's
module does not import one at all (its module closure)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ood.closure import closure
from ood.detector import Detector, fit_detector
from ood.models import build_from_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"name": "smallnet", "num_classes": 10, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "kwargs": {"width": 4, "depth": 1}}
#: The modules a deployed detector must not need.
PIPELINE = ("ood.config", "ood.benchmark", "ood.pipeline", "ood.run_train", "ood.run_evaluate", "ood.data",
            "ood.data.readers", "ood.data.fetching")

PROBE = """
import json, sys
import torch
{preamble}
from ood.detector import Detector
det = Detector.load(sys.argv[1])
x = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
scores = det.scores(x)
rows = det.predict(x)
print(json.dumps({{"scores": scores.tolist(), "decisions": [r["decision"] for r in rows],
                  "pipeline": sorted(m for m in {pipeline!r} if m in sys.modules)}}))
"""


def _images(n, seed):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A KNN detector (fitted state and threshold) saved to a file, and the scores this process gives."""
    torch.manual_seed(0)
    model = build_from_spec(SPEC).eval()
    det = fit_detector(model, "knn", {"k": 5}, (_images(60, 1), torch.arange(60) % 10), _images(41, 2),
                       model_spec=SPEC, profile="synthetic", tpr=0.9)
    path = det.save(tmp_path_factory.mktemp("det") / "det.pt")
    return path, Detector.load(path).scores(_images(7, 5)).tolist()


def _probe(path: Path, preamble: str = "") -> dict:
    code = PROBE.format(preamble=preamble, pipeline=PIPELINE)
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_saved_detector_loads_and_scores_in_a_fresh_process_without_pipeline_modules(saved):
    path, scores = saved
    got = _probe(path)
    assert got["pipeline"] == []
    assert got["scores"] == scores
    assert set(got["decisions"]) <= {"in", "out"}


def test_the_fresh_process_check_sees_a_pipeline_import(saved):
    """The check above can fail: a process that imports a pipeline module on the way is reported."""
    path, _ = saved
    assert _probe(path, preamble="import ood.config")["pipeline"] == ["ood.config"]
    assert set(_probe(path, preamble="import ood.data")["pipeline"]) >= {"ood.data", "ood.data.readers",
                                                                          "ood.data.fetching", "ood.config"}


def test_the_detector_module_imports_no_pipeline_module():
    """Not at import time, and not inside any function either (``ood.closure`` counts every import statement)."""
    assert sorted(closure({"ood.detector"}) & set(PIPELINE)) == []
    assert {"ood.config", "ood.benchmark"} <= closure({"ood.detector_runs"})   # the glue is where they are
