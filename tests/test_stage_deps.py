"""Each stage of dvc.yaml depends on exactly the code it runs, and each lock holds exactly the stages of dvc.yaml.

``ood.closure`` computes a stage notebook's module closure from the import statements; the checks here are that
``dvc.yaml`` (and its copy under ``pipelines/``) lists exactly that closure, that the closure holds every module a
stage really loads (an independent oracle: the modules in ``sys.modules`` after a fresh interpreter runs the
notebook's imports), and that the stages stay apart (a training stage imports no scorer, ...). The effect on
``dvc status`` of editing one module is checked on the pipeline's run (tests/test_pipeline.py).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ood import closure

ROOT = Path(__file__).resolve().parents[1]
STAGE_NOTEBOOKS = {"data": "01_data", "published": "02_published", "train": "02_train", "finetune": "02_train",
                   "evaluate": "03_evaluate", "tables": "04_tables", "figures": "05_figures",
                   "export": "06_ablations"}   # export: the length study's (pipelines/cifar10-cpu-length/)
#: Notebooks a stage runs that stay committed with their outputs (the synthetic profile's sweeps, run by nbval).
COMMITTED_WITH_OUTPUTS = {"06_ablations"}


def test_dvc_yaml_lists_each_stages_module_closure():
    assert closure.check(ROOT) == []
    for f in closure.dvc_files(ROOT):
        for name, (nb, listed) in closure.stage_deps(f).items():
            assert nb == f"notebooks/{STAGE_NOTEBOOKS[name]}.ipynb", (f, name)
            assert "ood" not in listed, f"{f}: stage {name} depends on the whole package"
            assert listed, f"{f}: stage {name} lists no code"


def test_the_check_fails_on_a_missing_or_extra_module_and_write_mends_it(tmp_path):
    """A copy of the repository's code and pipeline files with one module dropped from one stage and one added to
    another: the check names both; ``write`` puts the closure back."""
    for rel in ("ood", "notebooks", "dvc.yaml"):
        src = ROOT / rel
        (shutil.copytree(src, tmp_path / rel, ignore=shutil.ignore_patterns("__pycache__", "executed"))
         if src.is_dir() else shutil.copy(src, tmp_path / rel))
    dvc = tmp_path / "dvc.yaml"
    text = dvc.read_text()
    tables_block = text[text.index("\n  tables:"):text.index("\n  figures:")]
    broken = text.replace(tables_block, tables_block.replace("      - ood/tables.py\n", "", 1)
                          .replace("      - ood/report.py\n", "      - ood/report.py\n      - ood/train.py\n", 1))
    assert broken != text
    dvc.write_text(broken)
    problems = closure.check(tmp_path)
    assert len(problems) == 1 and "stage 'tables'" in problems[0]
    assert "missing ['ood/tables.py']" in problems[0] and "not imported ['ood/train.py']" in problems[0]
    assert closure.write(tmp_path) == [dvc]
    assert dvc.read_text() == text and closure.check(tmp_path) == []


def test_lazy_imports_count_and_type_checking_imports_do_not(tmp_path):
    pkg = tmp_path / "ood"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ood import c\n"
                              "def f():\n    from ood.b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import d\ndef g():\n    pass\n")
    (pkg / "c.py").write_text("")
    (pkg / "d.py").write_text("import ood.e\n")
    (pkg / "e.py").write_text("")
    mods = closure.package_modules(tmp_path)
    assert closure.closure({"ood.a"}, mods) == {"ood", "ood.a", "ood.b", "ood.d", "ood.e"}


def _runtime_modules(notebook: Path) -> set[str]:
    """The ood modules loaded after a fresh interpreter runs the import statements of a notebook's code cells."""
    cells = json.loads(notebook.read_text())["cells"]
    lines = [ln for c in cells if c["cell_type"] == "code" for ln in "".join(c["source"]).splitlines()
             if ln.startswith(("import ", "from "))]
    code = "\n".join(lines) + ("\nimport sys\n"
                               "print(' '.join(sorted(m for m in sys.modules if m == 'ood' or m.startswith('ood.'))))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return set(p.stdout.split())


def _as_module(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("notebook", sorted(set(STAGE_NOTEBOOKS.values())))
def test_the_closure_holds_every_module_a_stage_loads(notebook):
    listed = {_as_module(p) for p in closure.notebook_closure(ROOT / "notebooks" / f"{notebook}.ipynb", ROOT)
              if p.endswith(".py")}
    loaded = _runtime_modules(ROOT / "notebooks" / f"{notebook}.ipynb")
    assert "ood.repro" in loaded and len(loaded) > 3
    assert loaded - {"ood.nbrun"} <= listed, f"{notebook} loads modules its deps do not list: {sorted(loaded - listed)}"


# What each stage must not run (the issue that split the glue): a module here in a stage's closure would make its
# edits rerun that stage.
FORBIDDEN = {
    "02_train": {"scorers", "evaluate", "run_evaluate", "tables", "plots", "reference", "illustrations", "report"},
    "03_evaluate": {"losses", "sampling", "train", "run_train", "tables", "plots", "illustrations", "report"},
    "04_tables": {"train", "run_train", "losses", "sampling", "data", "benchmark", "plots", "illustrations"},
    "05_figures": {"train", "run_train", "tables", "run_evaluate"},
    "01_data": {"plots", "tables", "scorers", "losses", "train", "models", "evaluate", "report"},
}


@pytest.mark.parametrize("notebook", sorted(FORBIDDEN))
def test_each_stage_stays_out_of_the_others_code(notebook):
    listed = {_as_module(p) for p in closure.notebook_closure(ROOT / "notebooks" / f"{notebook}.ipynb", ROOT)}
    bad = {m for m in listed if m.split(".")[1:2] and m.split(".")[1] in FORBIDDEN[notebook]}
    assert not bad, f"{notebook} imports {sorted(bad)}"


def test_import_ood_loads_only_the_cpu_pin():
    code = "import sys, ood\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('ood'))))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["ood", "ood.repro"], p.stdout + p.stderr


def _expected_stages(params_file: Path) -> set[str]:
    p = yaml.safe_load(params_file.read_text())["pipeline"]
    return ({"data", "tables", "figures"} | {f"published@{m}" for m in p.get("published") or {}}
            | {f"train@{m}" for m in p["scratch"]}
            | {f"finetune@{m}" for m in p["finetune"]} | {f"evaluate@{m}" for m in p["evaluate"]})


@pytest.mark.parametrize("folder", [".", "pipelines/cifar10-cpu"])
def test_each_lock_holds_exactly_the_stages_of_its_pipeline(folder):
    lock = yaml.safe_load((ROOT / folder / "dvc.lock").read_text())["stages"]
    want = _expected_stages(ROOT / folder / "params.yaml")
    assert set(lock) == want, f"{folder}/dvc.lock: extra {sorted(set(lock) - want)}, missing {sorted(want - set(lock))}"


def test_stage_notebooks_carry_no_outputs():
    """A stage's input is its notebook without outputs; the executed copy is its output."""
    for nb in sorted(set(STAGE_NOTEBOOKS.values()) - COMMITTED_WITH_OUTPUTS):
        cells = json.loads((ROOT / "notebooks" / f"{nb}.ipynb").read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), nb
