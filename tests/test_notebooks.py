"""The executed stage notebooks: what the pipeline writes to notebooks/executed/<profile>/, against the committed
copies.

nbval would execute every stage notebook a second time; instead the copies the pipeline executed (in the throw-away
checkout of conftest.py) are compared here with the committed ones, byte for byte: every stage output is
deterministic (``ood.nbrun.clean``: no timing, no stderr, no host), and the pipeline is bit-reproducible on x86-64
CPUs with AVX2 (ood/repro.py). When they differ, the first differing cell is named, with its text outputs. The
tour notebook, which the pipeline does not run, stays under nbval (pyproject.toml, conftest.py).
"""
import json

import pytest
import yaml

from conftest import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PROFILE = PARAMS["profile"]
EXECUTED = ROOT / "notebooks" / "executed" / PROFILE
#: The executed copies of the default pipeline (dvc.yaml's outs), from params.yaml's method lists.
NAMES = (["01_data.ipynb"]
         + [f"02_train-{m}.ipynb" for m in [*PARAMS["pipeline"]["scratch"], *PARAMS["pipeline"]["finetune"]]]
         + [f"03_evaluate-{m}.ipynb" for m in PARAMS["pipeline"]["evaluate"]] + ["04_tables.ipynb", "05_figures.ipynb"])


def _texts(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(f"{o['name']}: {''.join(o['text'])}")
        elif o.get("output_type") in ("execute_result", "display_data") and "text/plain" in o.get("data", {}):
            out.append("".join(o["data"]["text/plain"]))
        elif o.get("output_type") == "error":
            out.append(f"{o['ename']}: {o['evalue']}")
    return out


def first_difference(a: dict, b: dict) -> str:
    """Where two notebooks (parsed JSON) first differ: metadata, the cell count, or a cell's source, text outputs or
    other outputs (images, HTML)."""
    if a["metadata"] != b["metadata"]:
        return f"notebook metadata: {a['metadata']} != {b['metadata']}"
    if len(a["cells"]) != len(b["cells"]):
        return f"{len(a['cells'])} cells != {len(b['cells'])}"
    for i, (x, y) in enumerate(zip(a["cells"], b["cells"])):
        if x.get("source") != y.get("source"):
            return f"cell {i}: the source differs"
        if _texts(x) != _texts(y):
            return f"cell {i}: text output {_texts(x)} != {_texts(y)}"
        if x != y:
            return f"cell {i}: metadata or non-text output (image, HTML) differs"
    return "the JSON formatting"


def test_the_committed_executed_notebooks_are_the_pipelines():
    """Every stage's executed copy is committed, with outputs, and nothing else lies beside them."""
    assert sorted(p.name for p in EXECUTED.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        nb = json.loads((EXECUTED / name).read_text())
        assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{name} has no outputs"
        assert "papermill" not in nb["metadata"] and "version" not in nb["metadata"].get("language_info", {}), name
        for c in nb["cells"]:
            assert "execution" not in c["metadata"] and "papermill" not in c["metadata"], name
            assert not any(o.get("name") == "stderr" for o in c.get("outputs", [])), f"{name}: a stderr output"


@pytest.mark.pipeline
@pytest.mark.full_pipeline
@pytest.mark.parametrize("name", NAMES)
def test_the_pipeline_writes_the_committed_executed_notebook(pipeline_root, name):
    rerun, committed = pipeline_root / "notebooks" / "executed" / PROFILE / name, EXECUTED / name
    if rerun.read_bytes() != committed.read_bytes():
        where = first_difference(json.loads(rerun.read_text()), json.loads(committed.read_text()))
        pytest.fail(f"notebooks/executed/{PROFILE}/{name} of a fresh `dvc repro` differs from the committed copy "
                    f"({where}): rerun `dvc repro` and commit it, or the run is not reproducible on this CPU")
