"""The tree passes ``ruff check`` with the configuration of pyproject.toml ([tool.ruff]), and that check can fail."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("ood", "benchmarks", "tests", "conftest.py")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                                reason="ruff is not installed (pip install -e '.[test]')")


def _ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_tree_is_lint_clean():
    out = _ruff(*TARGETS)
    assert out.returncode == 0, f"ruff check {' '.join(TARGETS)} failed:\n{out.stdout}{out.stderr}"


def test_lint_catches_an_unused_import(tmp_path):
    """The same configuration flags a scratch file with an unused import (F401): the check above can fail."""
    scratch = tmp_path / "scratch.py"
    scratch.write_text('"""Scratch module."""\nimport os\n')
    out = _ruff("--config", str(ROOT / "pyproject.toml"), str(scratch), cwd=tmp_path)
    assert out.returncode != 0, f"ruff accepted an unused import:\n{out.stdout}{out.stderr}"
    assert "F401" in out.stdout, out.stdout
