"""Command line: ``python -m ood train|evaluate --profile P --method M [...]``, beside the notebooks.

It calls what the notebooks call (``ood.run_train.train_method`` and ``ood.run_evaluate.evaluate_method``) with the
pipeline's params file (``params.yaml``, or ``--params`` / ``$OOD_PARAMS``), so a run here is the run a stage makes::

    python -m ood train --profile synthetic --method greg --epochs 1 --steps-per-epoch 3 --device cpu --run-dir DIR
    python -m ood evaluate --profile synthetic --method greg --device cpu --run-dir DIR

Under ``torchrun --nproc_per_node N -m ood train|evaluate ...`` the same command trains with DistributedDataParallel
on N processes, or evaluates with the sets split between them (``ood.distributed``); rank 0 prints and writes.
``--init-dir`` names the run folder a fine-tune starts from (default: the pipeline's run of that method).

``--seed S`` runs one seed (default: the params file's ``seeds``); each seed runs in ``<run-dir>/seeds/<S>/``. With
no ``--run-dir`` the outputs go where the pipeline's go (``runs/<profile>/<method>``, ``results/``, ``cache/``).
A detector to deploy (``ood.detector``; docs/detector.md): ``fit-detector`` fits one scorer on a seed's run
(``ood.detector_runs``), sets its threshold on half the ID test set and reports the achieved ID rate on the other
half and each OOD set's FPR; ``detect`` scores image files with the saved detector (needs only the file, no params)::

    python -m ood fit-detector --run runs/synthetic/ce/seeds/0 --scorer energy --tpr 0.95 --out det.pt
    python -m ood detect det.pt photos/ extra.png [--json] [--out rows.csv]

The authors' published networks (``ood.checkpoints``; ``python -m ood checkpoints`` lists them) stand in for a
trained method or run: ``--checkpoint NAME`` fetches one (the data root, the mirrors, its URL; SHA-256 checked) and
scores it without training, into ``runs/published/<profile>/<name>/`` (or ``--run-dir``)::

    python -m ood evaluate --profile cifar10 --checkpoint energy_cifar10_wrn_pretrained --device cpu
    python -m ood fit-detector --checkpoint oe_cifar10_wrn_oe_tune --profile cifar10 --scorer energy --out det.pt

Bad input (an unknown profile, method or scorer, a wrong value, missing data, a NaN loss) ends with one line
``error: ...`` naming what is wrong and how to fix it, and exit status 2; nothing written before is lost.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ood import config
from ood.numerics import check_number

__all__ = ["main", "parser"]


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, else the argument error ``'<text>' must be >= <minimum>``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum}")
        return v
    return parse


def _override(name: str):
    """An argparse type for an overridable TrainConfig field: a number under the field's own rule
    (``ood.config.override_rule``), else the argument error with the package's one-line message."""
    rule = {**config.override_rule(name), "allow_none": False}

    def parse(text: str):
        try:
            v = int(text) if rule.get("integer") else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if rule.get('integer') else 'a number'}") \
                from None
        try:
            return check_number(v, f"'--{name.replace('_', '-')}'", error=config.ParamError, **rule)
        except config.ParamError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ood", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{train,evaluate,fit-detector,detect,checkpoints}")

    def common(sp, published: bool = False):
        sp.add_argument("--profile", required=True, help="a profile: profiles/<name>.yaml")
        method = sp.add_mutually_exclusive_group(required=True) if published else sp
        method.add_argument("--method", required=not published, help="a training method of the profile (e.g. ce, greg)")
        if published:
            method.add_argument("--checkpoint", help=CHECKPOINT_HELP + " in place of a trained method (no training)")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
        sp.add_argument("--run-dir", type=Path, default=None,
                        help="folder of the run (default: the pipeline's, runs/<profile>/<method>)" + (
                            "; with --checkpoint, where its scores go (default: runs/published/<profile>/<name>)"
                            if published else ""))
        sp.add_argument("--seed", type=_int_at_least(0), default=None,
                        help="one seed (default: the params file's seeds)")
        sp.add_argument("--params", type=Path, default=None,
                        help="the pipeline's params file (default: $OOD_PARAMS, else params.yaml)")

    t = sub.add_parser("train", help="train one method of a profile (once per seed)")
    common(t)
    for name in config.OVERRIDES:   # the TrainConfig fields a run may override, with their rules
        t.add_argument("--" + name.replace("_", "-"), type=_override(name), default=None,
                       help=config.override_help(name))
    t.add_argument("--init-dir", type=Path, default=None,
                   help="run folder of the method a fine-tune starts from (default: the pipeline's)")
    e = sub.add_parser("evaluate", help="score a trained method (or a published checkpoint) with the profile's scorers")
    common(e, published=True)
    e.add_argument("--scorers", default=None, help="comma-separated scorers (default: the profile's list)")

    f = sub.add_parser("fit-detector", help="fit a deployable detector (scorer + threshold) on a seed's run")
    source = f.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a seed's run folder, e.g. runs/synthetic/ce/seeds/0")
    source.add_argument("--checkpoint", help=CHECKPOINT_HELP + " in place of --run (needs --profile)")
    f.add_argument("--scorer", default="energy", help="a registered scorer (default: energy)")
    f.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a scorer parameter (repeatable; default: the profile's evaluate.params)")
    f.add_argument("--tpr", type=float, default=0.95, help="fraction of ID images to accept (default: 0.95)")
    f.add_argument("--out", type=Path, required=True, help="the detector file to write")
    f.add_argument("--profile", default=None, help="the run's profile (default: from its path runs/<profile>/...)")
    f.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="seed of the split of the ID test set into calibration and held halves (default: 0)")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    f.add_argument("--batch-size", type=_int_at_least(1), default=None,
                   help="images per batch (default: the profile's evaluate.batch_size)")
    f.add_argument("--params", type=Path, default=None,
                   help="the pipeline's params file (default: $OOD_PARAMS, else params.yaml)")

    d = sub.add_parser("detect", help="score image files with a saved detector (one row per image)")
    d.add_argument("detector", type=Path, help="a detector file written by fit-detector")
    d.add_argument("inputs", nargs="+", type=Path, metavar="IMAGES_OR_FOLDER", help="image files or folders")
    d.add_argument("--json", action="store_true", help="write a JSON list instead of CSV")
    d.add_argument("--out", type=Path, default=None, help="write the rows to this file (default: standard output)")
    d.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    d.add_argument("--batch-size", type=_int_at_least(1), default=256, help="images per batch (default: 256)")

    sub.add_parser("checkpoints", help="list the authors' published checkpoints (ood.checkpoints): name, file, "
                   "SHA-256, source")
    return p


CHECKPOINT_HELP = "a published checkpoint of the authors (python -m ood checkpoints lists them)"


def _scorer_params(items: list[str]) -> dict:
    """``--param KEY=VALUE`` pairs; each value is read as YAML (``50`` an integer, ``null`` None, ``true``)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise config.ParamError(f"invalid value {item!r} for '--param'; allowed: KEY=VALUE, e.g. k=50")
        out[key] = yaml.safe_load(value)
    return out


def _fit_detector(args) -> None:
    from ood.detector import ood_rates
    from ood.detector_runs import fit_from_checkpoint, fit_from_run

    params = config.load_params(args.params)
    common = dict(tpr=args.tpr, seed=args.seed, device=config.resolve_device(args.device), batch_size=args.batch_size)
    if args.checkpoint is not None:
        if args.profile is None:
            raise config.ParamError(f"--checkpoint {args.checkpoint} needs --profile (one of "
                                    f"{', '.join(config.profiles(params))}): the sets to fit and calibrate on")
        det, bench = fit_from_checkpoint(params, args.checkpoint, args.scorer, _scorer_params(args.param),
                                         profile=args.profile, **common)
    else:
        det, bench = fit_from_run(params, args.run, args.scorer, _scorer_params(args.param), profile=args.profile,
                                  **common)
    rates = ood_rates(det, bench.ood, batch_size=args.batch_size or 256)
    det.save(args.out)
    print(det.summary())
    for name, r in rates.items():
        print(f"FPR {name}: {r['fpr']:.2f}% ({r['accepted']} of {r['n']} OOD images accepted as ID)")
    print(f"wrote {args.out}")


def _detect(args) -> None:
    from ood.cli_detect import conversion_note, list_images, read_images, write_rows
    from ood.detector import Detector

    det = Detector.load(args.detector, device=config.resolve_device(args.device))
    files = list_images(args.inputs)
    x, notes = read_images(files, det.input_spec)
    rows = [{"path": n["path"], **r} for n, r in zip(notes, det.predict(x, batch_size=args.batch_size))]
    write_rows(rows, args.out if args.out is not None else sys.stdout, as_json=args.json)
    print(f"detect: {conversion_note(notes, det.input_spec)}", file=sys.stderr)


def _detector_command(args) -> int:
    """``fit-detector`` and ``detect``: every bad input ends with one ``error: ...`` line and status 2, and no
    output file (both write to a temporary file and rename it at the end)."""
    from ood.data import ChecksumError, DataMissingError

    try:
        (_fit_detector if args.command == "fit-detector" else _detect)(args)
    except (config.ParamError, DataMissingError, ChecksumError, OSError, ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


def _list_checkpoints() -> int:
    from ood.checkpoints import CHECKPOINTS, describe_checkpoint

    print("\n".join(describe_checkpoint(name) for name in CHECKPOINTS))
    return 0


def _evaluate_checkpoint(args, params: dict) -> None:
    from ood.distributed import world
    from ood.run_checkpoint import evaluate_checkpoint, published_dir

    if args.seed is not None:
        raise config.ParamError(f"--seed {args.seed}: a published checkpoint is one network; leave --seed out")
    scorers = [s for s in args.scorers.split(",") if s] if args.scorers else None
    res = evaluate_checkpoint(params, args.checkpoint, args.profile, device=args.device, out_dir=args.run_dir,
                              scorers=scorers, progress=world().main)
    if world().main:
        avg = res.metrics[res.metrics.ood_set == "average"]
        print(f"{args.checkpoint} (the authors' weights): ID accuracy {res.id_accuracy:.2f}%")
        for _, r in avg.iterrows():
            print(f"{args.checkpoint} {r['scorer']}: FPR95 {r['fpr95']:.2f}  AUROC {r['auroc']:.2f}")
        print(f"wrote {args.run_dir or published_dir(args.profile, args.checkpoint)}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "checkpoints":
        return _list_checkpoints()
    if args.command in ("fit-detector", "detect"):
        return _detector_command(args)
    from ood import run_evaluate, run_train
    from ood.data import ChecksumError, DataMissingError
    from ood.distributed import world
    from ood.train import TrainingError

    try:
        params = config.load_params(args.params)
        config.profile_params(params, args.profile)
        seeds = [args.seed] if args.seed is not None else None
        if args.command == "train":
            cfg = config.method_config(params, args.method, args.profile,
                                       **{k: getattr(args, k) for k in config.OVERRIDES})
            history = run_train.train_method(params, args.profile, cfg, device=args.device, run_dir=args.run_dir,
                                             seeds=seeds, init_dir=args.init_dir, progress=world().main)
            last = history.groupby("seed").tail(1)
            for _, r in last.iterrows() if world().main else ():
                print(f"{args.method} seed {int(r['seed'])}: {int(r['epoch'])} epochs, test accuracy "
                      f"{r['test_accuracy']:.2f}%")
        elif args.checkpoint is not None:
            _evaluate_checkpoint(args, params)
        else:
            scorers = [s for s in args.scorers.split(",") if s] if args.scorers else None
            res = run_evaluate.evaluate_method(params, args.method, args.profile, device=args.device,
                                               run_dir=args.run_dir, seeds=seeds, scorers=scorers,
                                               progress=world().main)
            avg = res.metrics[res.metrics.ood_set == "average"]
            for (seed, scorer), r in avg.set_index(["seed", "scorer"]).iterrows() if world().main else ():
                print(f"{args.method} seed {seed} {scorer}: FPR95 {r['fpr95']:.2f}  AUROC {r['auroc']:.2f}")
    except (config.ParamError, DataMissingError, ChecksumError, TrainingError, FileNotFoundError, ValueError,
            KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
