"""What scoring one of the authors' published WRN-40-2 networks (``ood.checkpoints``) costs on this machine: every
registered scorer, ODIN included, as ``python -m ood evaluate --checkpoint`` runs them (issue 39).

The network is the registry entry's architecture (WRN-40-2, dropout 0.3, the OE/Energy statistics) with random
weights: the same cost as the authors' file, which this machine cannot download. Three measurements:

1. ``ood.evaluate.evaluate`` end to end on a subset of the profile's sets (``--fit``, ``--test``, ``--ood`` images);
2. per image, on ``--probe`` ID-test images: the shared forward (``ood.scorers.extract``, what every scorer but ODIN
   reads) and ODIN's score (its forward with gradient, the input backward, the second forward);
3. every other scorer (fit and score off cached features) at the **whole** sets' sizes: the subset's real features
   repeated to the full row counts (their cost depends on the counts, not the values).

Estimate for the whole sets = forwards x (2) + ODIN images x (2) + (3). The same formula at the subset's sizes is
printed beside the measured (1), as a check of the model. Data loading is reported apart.

    python benchmarks/published_eval.py --profile cifar10-cpu --fit 1000 --test 1000 --ood 300 --probe 500
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ood import config
from ood.benchmark import fit_set, load_benchmark
from ood.checkpoints import model_spec
from ood.data import Loader
from ood.evaluate import evaluate
from ood.models import build_from_spec
from ood.scorers import build_scorer, extract, profile_scorers


def _tile(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t``'s rows repeated to ``n`` rows."""
    return t.repeat((n + len(t) - 1) // len(t), *([1] * (t.dim() - 1)))[:n]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cifar10-cpu")
    p.add_argument("--checkpoint", default="energy_cifar10_wrn_pretrained", help="its architecture, not its weights")
    p.add_argument("--fit", type=int, default=1000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--ood", type=int, default=300, help="images of each OOD set")
    p.add_argument("--probe", type=int, default=500, help="ID-test images of the per-image timings")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    params = config.load_params()
    block = config.profile_params(params, a.profile)
    ev, seed = block["evaluate"], block["benchmark"].get("data_seed", 0)
    bs = ev.get("batch_size", 500)
    t0 = time.perf_counter()
    bench = load_benchmark(params, a.profile, with_aux=False)
    t_data = time.perf_counter() - t0
    full_fit = fit_set(bench.id_train, ev, seed)
    full = {"fit": len(full_fit), "id": len(bench.id_test), **{k: len(v) for k, v in bench.ood.items()}}
    sub_fit = full_fit.subset(min(a.fit, len(full_fit)), seed)
    sub_test = bench.id_test.subset(min(a.test, len(bench.id_test)), seed)
    sub_ood = {k: v.subset(min(a.ood, len(v)), seed) for k, v in bench.ood.items()}
    sub = {"fit": len(sub_fit), "id": len(sub_test), **{k: len(v) for k, v in sub_ood.items()}}

    torch.manual_seed(0)
    model = build_from_spec(model_spec(a.checkpoint)).eval().to(memory_format=torch.channels_last)
    names = profile_scorers(block)
    sparams = {n: (ev.get("params", {}) or {}).get(n, {}) for n in names}
    with torch.no_grad():
        model(sub_test.images[:8].float() / 255)                      # warm-up

    t0 = time.perf_counter()
    evaluate(model, id_train=sub_fit, id_test=sub_test, ood_sets=sub_ood, scorers=sparams, benchmark=a.profile,
             method=a.checkpoint, device="cpu", batch_size=bs, progress=False,
             average_over=block["benchmark"].get("average_over"), protocol=ev.get("protocol", "greg-detect"))
    t_sub = time.perf_counter() - t0

    probe = sub_test.subset(min(a.probe, len(sub_test)), seed)
    t0 = time.perf_counter()
    pen, logits, labels = extract(model, Loader(probe, bs, device="cpu"), device="cpu")
    per_fwd = (time.perf_counter() - t0) / len(probe)
    network = [n for n in names if build_scorer(n, **sparams[n]).needs_network]
    per_net = {}
    for n in network:
        s = build_scorer(n, **sparams[n])
        t0 = time.perf_counter()
        for x, _ in Loader(probe, bs, device="cpu"):
            s.score(model, x)
        per_net[n] = (time.perf_counter() - t0) / len(probe)

    def posthoc(n_fit: int, n_query: int) -> dict[str, float]:
        """Seconds of each scorer off features: fit on n_fit rows, score n_query rows."""
        fp, fl, fy = _tile(pen, n_fit), _tile(logits, n_fit), _tile(labels, n_fit)
        qp, ql = _tile(pen, n_query), _tile(logits, n_query)
        out = {}
        for n in names:
            if n in network:
                continue
            s = build_scorer(n, **sparams[n])
            t0 = time.perf_counter()
            if s.needs_fit:
                s.fit_features(fp, fl, fy, model)
            s.score_features(qp, ql, model)
            out[n] = time.perf_counter() - t0
        return out

    def estimate(sizes: dict) -> dict:
        n_query = sum(v for k, v in sizes.items() if k != "fit")
        n_fwd = sizes["fit"] + n_query
        post = posthoc(sizes["fit"], n_query)
        return {"forwards": n_fwd, "forward_s": n_fwd * per_fwd,
                **{f"{n}_s": n_query * per_net[n] for n in network},
                "posthoc_s": sum(post.values()), "posthoc_slowest": sorted(post.items(), key=lambda kv: -kv[1])[:3],
                "total_s": n_fwd * per_fwd + n_query * sum(per_net.values()) + sum(post.values())}

    out = {"profile": a.profile, "architecture": model_spec(a.checkpoint), "threads": torch.get_num_threads(),
           "scorers": names, "data_load_s": t_data, "subset_sizes": sub, "full_sizes": full,
           "ms_per_image_forward": 1e3 * per_fwd, **{f"ms_per_image_{n}": 1e3 * v for n, v in per_net.items()},
           "subset_measured_s": t_sub, "subset_model": estimate(sub), "full_estimate": estimate(full)}
    print(json.dumps(out, indent=1, default=str))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    return out


if __name__ == "__main__":
    main()
