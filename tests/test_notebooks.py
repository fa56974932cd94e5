"""The stage notebooks, run once by the pipeline, against the outputs committed in notebooks/.

nbval would execute every stage notebook a second time; instead the copies the pipeline executed (in the throw-away
checkout of conftest.py) are compared here with the committed notebooks, cell by cell: every code cell's source, and
the text outputs of every cell not tagged ``nbval-ignore-output``. The pipeline is bit-reproducible on x86-64 CPUs
with AVX2 (ood/repro.py), so the comparison is exact. Images and HTML are not compared (their bytes depend on
matplotlib's and pandas' versions); the numbers they show are compared as text where the notebook prints them.
The tour notebook, which the pipeline does not run, stays under nbval (pyproject.toml, conftest.py).
"""
import nbformat
import pytest

from conftest import ROOT
from ood.publish import DEFAULT_RUNS, clean


def _texts(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            out.append(o["text"])
        elif o.get("output_type") in ("execute_result", "display_data") and "text/plain" in o.get("data", {}):
            out.append(o["data"]["text/plain"])
        elif o.get("output_type") == "error":
            out.append(f"{o['ename']}: {o['evalue']}")
    return out


@pytest.mark.pipeline
@pytest.mark.parametrize("name", list(DEFAULT_RUNS))
def test_stage_notebook_run_by_the_pipeline_matches_the_committed_outputs(pipeline_root, name):
    from ood.config import load_params

    profile = load_params(ROOT / "params.yaml")["profile"]
    executed = clean(nbformat.read(pipeline_root / "runs" / profile / DEFAULT_RUNS[name] / f"{name}.ipynb",
                                   as_version=4))
    committed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    run_cells = [c for c in executed.cells if c.cell_type == "code"]
    kept_cells = [c for c in committed.cells if c.cell_type == "code"]
    assert [c.source for c in run_cells] == [c.source for c in kept_cells], f"{name}: the code cells differ"
    checked = 0
    for i, (run, kept) in enumerate(zip(run_cells, kept_cells)):
        if "nbval-ignore-output" in kept.metadata.get("tags", []):
            continue
        assert _texts(run) == _texts(kept), f"{name}, code cell {i}: output differs from the committed notebook"
        checked += bool(_texts(kept))
    assert checked > 0, f"{name}: no output of the committed notebook is compared"
