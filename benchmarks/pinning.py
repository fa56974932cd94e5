"""What pinning the CPU instruction set and thread count (ood/repro.py) does to the bits and the time of training.

Each case runs in a fresh process (the libraries read their variables once): 20 SGD steps of SmallNet (width 16,
depth 2, the synthetic profile's net) on fixed random batches of 128, in NCHW and in channels_last, and prints the
sha256 of the trained weights and the time of the steps after 3 warm-up steps. Cases: pinned (ATen and oneDNN at
AVX2, MKL at ``MKL_CBWR=COMPATIBLE``), pinned with another MKL branch in its place (``--mkl``), and not pinned
(``OOD_CPU_ISA=native``), each at 1, 2 and 4 threads. The first line names the CPU.

    python benchmarks/pinning.py            # a Markdown table
    python benchmarks/pinning.py --steps 40 --repeats 3 --mkl COMPATIBLE,AVX2,AUTO

Equal hashes in one column mean the same bits; the time column is the cost of the pinning on this CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CASE = r"""
import hashlib, json, sys, time
import os
import ood, torch
if os.environ.get("PINNING_MKL_CBWR"):  # after ood's pin, before MKL's first call (which reads the variable)
    os.environ["MKL_CBWR"] = os.environ["PINNING_MKL_CBWR"]
from ood.models import build_model
from ood.repro import state
steps, cl = int(sys.argv[1]), sys.argv[2] == "cl"
torch.manual_seed(0)
m = build_model("smallnet", 10, [0.5] * 3, [0.25] * 3, width=16, depth=2)
fmt = torch.channels_last if cl else torch.contiguous_format
m = m.to(memory_format=fmt)
opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True)
g = torch.Generator().manual_seed(1)
batches = [(torch.rand(128, 3, 32, 32, generator=g).contiguous(memory_format=fmt),
            torch.randint(0, 10, (128,), generator=g))
           for _ in range(steps)]
for i, (x, y) in enumerate(batches):
    if i == 3:
        t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
ms = 1000 * (time.perf_counter() - t0) / (steps - 3)
h = hashlib.sha256(b"".join(v.detach().contiguous().numpy().tobytes() for v in m.state_dict().values())).hexdigest()
print(json.dumps({"hash": h[:12], "ms_per_step": ms, **state()}))
"""


def run_case(isa: str, threads: int, layout: str, steps: int, mkl: str = "") -> dict:
    env = {**os.environ, "OOD_CPU_ISA": isa, "OOD_THREADS": str(threads)}
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "PINNING_MKL_CBWR"):
        env.pop(k, None)  # what this process inherited (e.g. pinned by ood) must not decide the case
    if mkl:
        env["PINNING_MKL_CBWR"] = mkl
    out = subprocess.run([sys.executable, "-c", CASE, str(steps), layout], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="runs per case; the time is the fastest")
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--mkl", default="", help="MKL_CBWR branches to try in place of the pinned one, e.g. AVX2,AUTO")
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_name()}\n")
    print("| ISA setting | capability | threads | layout | weights sha256 (12) | ms/step (best of "
          f"{args.repeats}) |\n| --- | --- | ---: | --- | --- | ---: |")
    cases = [("avx2", "")] + [("avx2", b) for b in args.mkl.split(",") if b] + [("native", "")]
    for isa, mkl in cases:
        label = "native" if isa == "native" else f"pinned, MKL_CBWR={mkl}" if mkl else "pinned"
        for threads in map(int, args.threads.split(",")):
            for layout in ("nchw", "cl"):
                runs = [run_case(isa, threads, layout, args.steps, mkl) for _ in range(args.repeats)]
                hashes = {r["hash"] for r in runs}
                h = runs[0]["hash"] if len(hashes) == 1 else "differs between repeats: " + ", ".join(sorted(hashes))
                print(f"| {label} | {runs[0]['cpu_capability']} | {threads} "
                      f"| {layout} | {h} | {min(r['ms_per_step'] for r in runs):.1f} |", flush=True)


def cpu_name() -> str:
    """The CPU's vendor and model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    import platform

    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    family = f", family {info['cpu family']} model {info['model']}" if "cpu family" in info else ""
    return f"{info.get('vendor_id', '?')} {info.get('model name', '?')}{family}"


if __name__ == "__main__":
    main()
