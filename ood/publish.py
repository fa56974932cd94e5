"""Copy the executed notebooks of the default run into ``notebooks/`` so they open with outputs.

``python -m ood.publish`` (after ``dvc repro`` on the default profile): for each notebook, the run whose
parameters equal the notebook's defaults is copied over ``notebooks/<name>.ipynb`` with papermill's
injected-parameters cell and timing metadata removed; then ``dvc commit -f`` records the new bytes of
the notebooks (their code is unchanged, so no stage needs to rerun).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat

from ood.config import load_params, repo_root

# notebook -> run folder (relative to runs/<profile>/) holding the executed copy with default parameters
DEFAULT_RUNS = {"01_data": ".", "02_train": "ce", "03_evaluate": "ce", "04_tables": ".", "05_figures": "."}


def clean(nb):
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.metadata.pop("papermill", None)
    for c in nb.cells:
        c.metadata.pop("papermill", None)
        c.metadata.pop("execution", None)
        if c.cell_type == "code":
            c.outputs = [o for o in c.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb


def publish(profile: str | None = None, commit: bool = True) -> list[Path]:
    root = repo_root()
    params = load_params()
    profile = profile or params["profile"]
    written = []
    for name, sub in DEFAULT_RUNS.items():
        src = root / "runs" / profile / sub / f"{name}.ipynb"
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing: run `dvc repro` on profile {profile!r} first")
        nb = clean(nbformat.read(src, as_version=4))
        dst = root / "notebooks" / f"{name}.ipynb"
        nbformat.write(nb, dst)
        written.append(dst)
    if commit:
        subprocess.run([str(Path(sys.executable).parent / "dvc"), "commit", "-f", "-q"], cwd=root, check=True)
    return written


if __name__ == "__main__":
    for p in publish():
        print(f"published {p.relative_to(repo_root())}")
