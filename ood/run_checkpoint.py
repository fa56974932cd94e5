"""Every scorer of a profile on one of the authors' published networks (``ood.checkpoints``): the baselines that
need no training (issue 39), scored as the evaluate stage scores a seed of a method.

``evaluate_checkpoint`` loads the network through the registry (the data root, the mirrors, its official URL; the
SHA-256 enforced), checks that its ID set is the profile's, and runs ``ood.evaluate.evaluate`` on the profile's sets
with the profile's scorers, fit set, batch size, protocol and average, as ``ood.run_evaluate`` does. It writes
``metrics.csv`` (``method`` = the checkpoint's name, plus ``id_accuracy``), ``scores.npz`` (``ood.artifacts``) and
``checkpoint.json`` (the entry: URL, SHA-256, where the digest is from, training, licence note) into
``runs/published/<profile>/<name>/`` (git-ignored), or the folder given. No pipeline stage runs this module.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ood import config
from ood.artifacts import save_scores
from ood.benchmark import fit_set, load_benchmark
from ood.checkpoints import check_benchmark, load_checkpoint
from ood.data.registry import profile_mirrors
from ood.distributed import world
from ood.evaluate import EvalResult, evaluate
from ood.scorers import profile_scorers

__all__ = ["evaluate_checkpoint", "published_dir"]


def published_dir(profile: str, name: str, root: Path | None = None) -> Path:
    """Where the evaluation of published checkpoint ``name`` on ``profile`` goes by default:
    ``<repo>/runs/published/<profile>/<name>`` (``runs/*`` is git-ignored)."""
    return (root or config.repo_root()) / "runs" / "published" / profile / name


def evaluate_checkpoint(params: dict, name: str, profile: str | None = None, *, device: str = "auto", out_dir=None,
                        scorers: list[str] | None = None, progress: bool = True, data_root=None) -> EvalResult:
    """Score the published checkpoint ``name`` with ``scorers`` (default: the profile's) on the profile's sets; see
    the module docstring. ``data_root``: where the checkpoint file is kept (default ``ood.data.fetching.DATA_ROOT``).
    Returns the ``ood.evaluate.EvalResult``; the files go to ``out_dir`` (default :func:`published_dir`)."""
    profile = profile or params["profile"]
    block = config.profile_params(params, profile)
    entry = check_benchmark(name, block["benchmark"], profile)
    names = list(scorers) if scorers else profile_scorers(block)
    ev = block["evaluate"]
    sparams = ev.get("params", {}) or {}
    dev = config.resolve_device(device)
    with profile_mirrors(block["benchmark"].get("mirrors")):
        model = load_checkpoint(name, dev, data_root)
    bench = load_benchmark(params, profile, with_aux=False)
    res = evaluate(model, id_train=fit_set(bench.id_train, ev, block["benchmark"].get("data_seed", 0)),
                   id_test=bench.id_test, ood_sets=bench.ood, scorers={n: sparams.get(n, {}) for n in names},
                   benchmark=profile, method=name, device=dev, batch_size=ev.get("batch_size", 500),
                   progress=progress, average_over=block["benchmark"].get("average_over"),
                   protocol=ev.get("protocol", "greg-detect"))
    if world().main:
        out = Path(out_dir) if out_dir is not None else published_dir(profile, name)
        out.mkdir(parents=True, exist_ok=True)
        metrics = res.metrics.copy()
        metrics["id_accuracy"] = res.id_accuracy
        metrics.to_csv(out / "metrics.csv", index=False, float_format="%.4f")
        save_scores(res.scores, out / "scores.npz")
        info = {k: v for k, v in dataclasses.asdict(entry).items() if k != "file"}
        info.update(url=entry.file.url, checksum=entry.file.checksum, checksum_source=entry.file.source,
                    weights="published by the authors; evaluated by this project")
        (out / "checkpoint.json").write_text(json.dumps(info, indent=1, default=list) + "\n")
    return res
