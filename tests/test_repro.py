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
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    # MKL's one fixed CNR branch that it honours on AMD CPUs too (AVX2 is honoured on Intel only: ood/repro.py)
    assert env["MKL_CBWR"] == "COMPATIBLE"
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


_GEMM = ("import hashlib, os, sys\n"
         "import ood, torch\n"
         "if len(sys.argv) > 1: os.environ['MKL_CBWR'] = sys.argv[1]  # after ood's pin, before MKL's first call\n"
         "g = torch.Generator().manual_seed(0)\n"
         "a, b = torch.randn(128, 64, generator=g), torch.randn(64, 10, generator=g)\n"
         "c = torch.randn(300, 257, generator=g) @ torch.randn(257, 129, generator=g)\n"
         "print(hashlib.sha256((a @ b).numpy().tobytes() + c.numpy().tobytes()).hexdigest())\n")


@pytest.mark.skipif(not repro._has_avx2(), reason="needs an x86-64 CPU with AVX2")
def test_mkl_computes_on_the_pinned_branch_in_a_fresh_process():
    """Importing ood puts MKL on its COMPATIBLE branch before MKL's first product: the products of a pinned process
    equal those of one told COMPATIBLE explicitly, and (where this CPU's AUTO branch differs) not AUTO's."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OOD_CPU_ISA")}
    run = lambda *a: subprocess.run([sys.executable, "-c", _GEMM, *a], env=env, capture_output=True, text=True,
                                    check=True).stdout.strip()
    pinned, compatible, auto = run(), run("COMPATIBLE"), run("AUTO")
    assert pinned == compatible
    if auto == compatible:
        pytest.skip("MKL's AUTO and COMPATIBLE branches give the same products on this CPU: cannot tell them apart")
    assert pinned != auto
