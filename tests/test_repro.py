"""ood.repro: every process of the package computes with the same instruction set and thread count."""
import os
import subprocess
import sys

import pytest

from ood import repro


def _flags(monkeypatch, has_avx2: bool, machine: str = "x86_64"):
    monkeypatch.setattr(repro.platform, "machine", lambda: machine)
    monkeypatch.setattr(repro, "_has_avx2", lambda: has_avx2 and machine == "x86_64")


def test_pinned_sets_the_isa_and_threads_on_an_avx2_cpu(monkeypatch):
    _flags(monkeypatch, True)
    env = {"ATEN_CPU_CAPABILITY": "avx512"}
    got = repro.pin(env)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["MKL_CBWR"] == "COMPATIBLE"
    assert env["OMP_NUM_THREADS"] == "2" and got == {k: env[k] for k in got}


def test_no_isa_pinning_without_avx2_or_when_asked_native(monkeypatch):
    _flags(monkeypatch, False, machine="aarch64")
    assert "ATEN_CPU_CAPABILITY" not in repro.pinned({})
    _flags(monkeypatch, True)
    assert "ATEN_CPU_CAPABILITY" not in repro.pinned({"OOD_CPU_ISA": "native"})
    assert "OMP_NUM_THREADS" not in repro.pinned({"OOD_THREADS": "native"})
    assert repro.pinned({"OOD_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    with pytest.raises(ValueError, match="OOD_THREADS='two'.*'native'"):
        repro.pinned({"OOD_THREADS": "two"})


def test_cpuinfo_flags_are_read_as_words(monkeypatch, tmp_path):
    monkeypatch.setattr(repro.platform, "machine", lambda: "x86_64")
    real_open = open

    def fake(text):
        def _open(path, *a, **k):
            if path == "/proc/cpuinfo":
                f = tmp_path / "cpuinfo"
                f.write_text(text)
                return real_open(f, *a, **k)
            return real_open(path, *a, **k)
        return _open

    monkeypatch.setattr("builtins.open", fake("processor : 0\nflags\t\t: fpu sse avx avx2 fma\n"))
    assert repro._has_avx2()
    monkeypatch.setattr("builtins.open", fake("processor : 0\nflags\t\t: fpu sse avx avx2x fma\n"))
    assert not repro._has_avx2()


@pytest.mark.skipif(not repro._has_avx2(), reason="needs an x86-64 CPU with AVX2")
def test_importing_ood_pins_a_fresh_process_even_against_the_callers_variables():
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    env.pop("OOD_CPU_ISA", None), env.pop("OOD_THREADS", None)
    code = ("import torch, ood; x = torch.ones(3) + 1; "
            "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", str(repro.THREADS)]
