"""benchmarks/train_speed.py: the tiny CPU run prints a full table, the bf16 penalty matches fp32, bad names fail."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from ood.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    """benchmarks/train_speed.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_speed", ROOT / "benchmarks" / "train_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ts = _load_script()


def _table_rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the data rows of the Markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_tiny_cpu_run_prints_a_row_per_method_with_speeds_and_ratio(tmp_path, capsys):
    """The tiny CPU run (in-process, 1 thread, 2 DataLoader workers) prints one row per method with positive finite
    images/s of both loops and their ratio, the GReg+ sampling shares, and writes the same rows to JSON."""
    methods = ["ce", "greg", "greg_plus"]
    out_json = tmp_path / "speed.json"
    threads_before = torch.get_num_threads()
    report = ts.main(["--size", "tiny", "--device", "cpu", "--methods", ",".join(methods), "--threads", "1",
                      "--data-root", str(tmp_path / "data"), "--json", str(out_json)])
    text = capsys.readouterr().out
    header = "| device | method |"
    cols = [c.strip() for c in next(ln for ln in text.splitlines() if ln.startswith(header)).strip("|").split("|")]
    assert "ratio ours/ref" in cols
    rows = _table_rows(text, header)
    assert [r[cols.index("method")] for r in rows] == methods
    for r in rows:
        assert r[cols.index("device")] == "cpu"
        ours, ref = float(r[cols.index("ours img/s")]), float(r[cols.index("reference img/s")])
        ratio = float(r[cols.index("ratio ours/ref")].rstrip("x"))
        for v in (ours, ref, ratio):
            assert math.isfinite(v) and v > 0
        assert r[cols.index("ours epoch (est.)")].endswith(("s", "min"))
    # GReg+ sampling share, ours and sklearn, each a share of a step in (0, 100]
    sampling = _table_rows(text, "| device | ours: torch k-means")
    assert len(sampling) == 1
    for cell in (sampling[0][2], sampling[0][4]):
        assert 0 < float(cell.rstrip("%")) <= 100
    # the JSON holds the same rows
    saved = json.loads(out_json.read_text())
    assert [r["method"] for r in saved["rows"]] == methods == [r["method"] for r in report["rows"]]
    assert all(r["ours_img_s"] > 0 and r["ref_img_s"] > 0 for r in saved["rows"])
    assert saved["rows"][-1]["pool"] == 6 * saved["batch_size"]
    assert torch.get_num_threads() == threads_before  # main restores the thread count it changed


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (more threads than free cores stall on a shared CPU), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bf16_penalty_matches_fp32_on_cpu(one_thread):
    """The GReg penalty under CPU bf16 autocast + channels_last is within 1e-2 (relative) of fp32 on SmallNet."""
    torch.manual_seed(0)
    model = build_model("smallnet", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.rand(32, 3, 32, 32)
    res = ts.bf16_check(model, x, n_id=16)
    assert res["penalty_fp32"] > 0 and math.isfinite(res["penalty_bf16"])
    assert res["rel_err_penalty"] < 1e-2
    # parameter gradients: bf16 perturbs every gradient of a BatchNorm net (CE's too, see rel_err_ce_grads);
    # this bound only catches a gross error (a missing double-backward in one precision gives ~1)
    assert 0 <= res["rel_err_grads"] < 0.2 and 0 <= res["rel_err_ce_grads"] < 0.2


def test_reference_cluster_select_returns_distinct_candidates(one_thread):
    """The authors'-style GReg+ selection (sklearn KMeans, two picks per cluster, random fill) returns n_out
    distinct candidates of the pool."""
    torch.manual_seed(0)
    model = build_model("smallnet", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
    pool = torch.rand(48, 3, 32, 32)
    picked = ts.reference_cluster_select(model, pool, n_out=16, k=8, seed=0)
    assert picked.shape == (16, 3, 32, 32)
    rows = {tuple(p.flatten()[:8].tolist()) for p in picked}
    assert len(rows) == 16  # no candidate twice


def test_unknown_method_fails_listing_the_allowed_ones(capsys):
    """A misspelt method name stops the script with a message naming it and every allowed method."""
    with pytest.raises(SystemExit):
        ts.main(["--methods", "ce,gregg", "--device", "cpu"])
    err = capsys.readouterr().err
    assert "unknown method 'gregg'" in err
    assert all(m in err for m in ts.METHODS)


def test_the_model_measured_is_the_profiles_model_as_its_yaml_writes_it():
    """The benchmark read ``params.get("synthetic")`` where the profiles live under ``params["profiles"]``, so it
    always fell back to SmallNet's defaults. Oracle: the model block of profiles/<profile>.yaml read with yaml here."""
    import yaml

    from ood.config import load_params

    params = load_params(ROOT / "params.yaml")
    for profile, name in (("synthetic", "smallnet"), (ts.PROFILE, "wrn40_2")):
        block = dict(yaml.safe_load((ROOT / "profiles" / f"{profile}.yaml").read_text())[profile]["model"])
        assert block.pop("name") == name
        spec = ts.model_spec(params, name)
        assert (spec["name"], spec["mean"], spec["std"]) == (name, block.pop("mean"), block.pop("std"))
        assert spec["kwargs"] == block, profile  # e.g. synthetic's width and depth, not SmallNet's defaults
