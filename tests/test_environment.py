"""environment.yml and pyproject.toml must name the same packages with the same pins."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    got = dict(_split(r) for r in pip_block if not r.startswith("-e"))
    assert got == wanted


def test_torch_pinned_as_developers_guide_says():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = dict(_split(r) for r in project["dependencies"])
    assert deps["torch"] == "==2.14.1"
    assert deps["torchvision"] == "==0.29.1"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash test\n(.*?)^```", readme, flags=re.S | re.M)
    assert len(blocks) == 1, "README.md must hold exactly one ```bash test block (what .ci/run executes)"
    assert "pytest" in blocks[0]
    assert "```bash test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.pipeline  # results/synthetic/summary.json is rewritten by the pipeline's tables stage: read it after
def test_readme_results_table_matches_the_summary():
    import json
    import re

    summary = json.loads((ROOT / "results" / "synthetic" / "summary.json").read_text())
    rows = re.findall(r"^\| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", (ROOT / "README.md").read_text(), re.M)
    assert {r[0] for r in rows} == set(summary), "README's results table must list every method of summary.json"
    for m, acc, fpr, auroc in rows:
        s = summary[m]
        assert (float(acc), float(fpr), float(auroc)) == (s["id_accuracy"], s["energy_fpr95"], s["energy_auroc"]), m
