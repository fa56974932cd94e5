"""``python -m ood train|evaluate``: the notebooks' calls from a shell, with their one-line errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def ood(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ood", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_help_names_both_commands_and_their_options():
    p = ood("--help")
    assert p.returncode == 0 and "train" in p.stdout and "evaluate" in p.stdout
    t = ood("train", "--help")
    for opt in ("--profile", "--method", "--epochs", "--steps-per-epoch", "--device", "--run-dir", "--seed"):
        assert opt in t.stdout, opt


@pytest.mark.slow
def test_train_then_evaluate_a_run_folder(tmp_path):
    run = tmp_path / "greg"
    init = ood("train", "--profile", "synthetic", "--method", "ce", "--epochs", "1", "--steps-per-epoch", "2",
               "--device", "cpu", "--run-dir", str(tmp_path / "ce"), "--seed", "0")
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "ce" / "seeds" / "0" / "model.pt").is_file()
    assert "ce seed 0: 1 epochs" in init.stdout
    ev = ood("evaluate", "--profile", "synthetic", "--method", "ce", "--device", "cpu", "--run-dir",
             str(tmp_path / "ce"), "--seed", "0", "--scorers", "energy,msp")
    assert ev.returncode == 0, ev.stderr
    m = pd.read_csv(tmp_path / "ce" / "metrics.csv")
    assert set(m.scorer) == {"energy", "msp"} and set(m.seed) == {0}
    avg = m[(m.ood_set == "average") & (m.scorer == "energy")]["fpr95"].item()
    assert f"ce seed 0 energy: FPR95 {avg:.2f}" in ev.stdout
    assert not run.exists()


BAD_INPUT = [
    (["train", "--profile", "synthetic", "--method", "nope", "--device", "cpu"], "unknown method 'nope'; allowed: "),
    (["train", "--profile", "nowhere", "--method", "ce"], "unknown profile 'nowhere'; allowed: "),
    (["evaluate", "--profile", "synthetic", "--method", "ce", "--scorers", "energy,bogus", "--run-dir",
      "/nonexistent/x", "--seed", "0"], ""),
]


def test_bad_input_ends_with_one_error_line_and_status_2_from_a_shell():
    """The command as a shell runs it (a fresh interpreter, whatever it prints while starting): one line, status 2."""
    args, message = BAD_INPUT[0]
    p = ood(*args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], p.stderr


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_ends_with_one_error_line_and_status_2(args, message, capsys):
    """Every bad input, through ``ood.__main__.main`` in this process (the shell's path is the test above)."""
    from ood.__main__ import main

    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_argument_errors_are_argparse_errors(capsys):
    from ood.__main__ import main

    for args, message in (
            (["--epochs", "-1"], "argument --epochs: invalid value -1 for '--epochs'; allowed: an integer >= 0"),
            (["--lr", "0"], "argument --lr: invalid value 0.0 for '--lr'; allowed: a number > 0")):
        with pytest.raises(SystemExit) as e:
            main(["train", "--profile", "synthetic", "--method", "ce", *args])
        assert e.value.code == 2 and message in capsys.readouterr().err
