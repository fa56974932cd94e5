"""ood.detector and ``python -m ood fit-detector|detect``: the split, the threshold rule, the interval, the one-file
round trip (every registered scorer's fitted state included), image preparation, and one-line errors that leave no
output file. Tiny models (SmallNet width 4) and a tiny synthetic profile in a temporary repository root."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ood import config
from ood.__main__ import main
from ood.cli_detect import conversion_note, read_images
from ood.detector import (
    Detector,
    DetectorError,
    fit_detector,
    split_halves,
    wilson_interval,
)
from ood.metrics import tpr_threshold
from ood.models import build_from_spec
from ood.scorers import DEFAULTS, SCORERS, build_scorer, extract

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"name": "smallnet", "num_classes": 10, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "kwargs": {"width": 4, "depth": 1}}


def tiny_net(seed=0, spec=SPEC):
    """A seeded SmallNet with non-trivial BatchNorm statistics (eval mode differs from train mode)."""
    torch.manual_seed(seed)
    m = build_from_spec(spec)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def images(n, seed, size=32):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def write_run(run_dir: Path, spec=SPEC, seed=0, method="ce") -> Path:
    """A run folder as ood.train writes it (model.pt: state_dict, model spec, meta), random weights."""
    run_dir.mkdir(parents=True, exist_ok=True)
    blob = {"state_dict": tiny_net(seed, spec).state_dict(), "model": spec,
            "meta": {"method": method, "epochs": 0, "config": {"method": method, "seed": seed}}}
    torch.save(blob, run_dir / "model.pt")
    return run_dir


@pytest.fixture(scope="module")
def data():
    x_train, x_test = images(120, 1), images(101, 2)
    return (x_train, torch.arange(120) % 10), x_test


@pytest.fixture(scope="module")
def energy_det(data):
    fit, test = data
    return fit_detector(tiny_net(), "energy", {}, fit, test, model_spec=SPEC, profile="synthetic", tpr=0.9,
                        batch_size=64)


# ----------------------------------------------------------------------------------------------
# The split, the threshold, the interval
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 101, 1000])
def test_split_halves_are_disjoint_cover_everything_and_are_seeded(n):
    cal, held = split_halves(n, seed=3)
    assert len(cal) == (n + 1) // 2 and len(held) == n // 2
    assert set(cal.tolist()).isdisjoint(held.tolist())
    assert sorted(cal.tolist() + held.tolist()) == list(range(n))
    again = split_halves(n, seed=3)
    assert torch.equal(again[0], cal) and torch.equal(again[1], held)
    if n > 2:
        assert not torch.equal(split_halves(n, seed=4)[0], cal)
        assert cal.tolist() != list(range(len(cal)))   # a permutation, not the first half
    with pytest.raises(ValueError, match="allowed"):
        split_halves(1)


def _wilson_by_bisection(k, n, z=1.959963984540054):
    """The Wilson interval as the set of p with |k/n - p| <= z sqrt(p (1 - p) / n), its ends found by bisection
    (an implementation independent of the closed form)."""
    ph = k / n

    def inside(p):
        return abs(ph - p) <= z * math.sqrt(p * (1 - p) / n)

    def edge(a, b):   # a inside, b outside
        for _ in range(200):
            m = (a + b) / 2
            a, b = (m, b) if inside(m) else (a, m)
        return a

    lo = 0.0 if k == 0 else edge(ph, 0.0)
    hi = 1.0 if k == n else edge(ph, 1.0)
    return lo, hi


@pytest.mark.parametrize("k, n", [(95, 100), (472, 500), (1, 7), (0, 20), (20, 20), (50, 100)])
def test_wilson_interval_matches_its_definition(k, n):
    lo, hi = wilson_interval(k, n)
    ref = _wilson_by_bisection(k, n)
    assert lo == pytest.approx(ref[0], abs=1e-12) and hi == pytest.approx(ref[1], abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_published_value():
    # Newcombe (1998), Statistics in Medicine 17:857-872, the example 81/263: score (Wilson) interval 0.2553-0.3662
    lo, hi = wilson_interval(81, 263)
    assert round(lo, 4) == 0.2553 and round(hi, 4) == 0.3662


def test_threshold_follows_the_tpr_threshold_rule_on_the_calibration_half(energy_det, data):
    det, (_, test) = energy_det, data
    c = det.calibration
    s = det.scores(test, batch_size=64).astype(np.float64)   # the batches fit_detector scored
    cal, held = c["calib_index"].numpy(), c["held_index"].numpy()
    assert set(cal).isdisjoint(held) and len(cal) + len(held) == len(test)
    assert det.threshold == tpr_threshold(s[cal], 0.9)
    m = math.ceil(0.9 * len(cal))
    assert len(np.unique(s[cal])) == len(cal)                 # no ties here: exactly m accepted
    assert c["calib_accepted"] == int((s[cal] >= det.threshold).sum()) == m
    assert c["calib_rate"] == m / len(cal) >= 0.9
    # the held half: its own count, with its Wilson interval
    k = int((s[held] >= det.threshold).sum())
    assert c["held_accepted"] == k and c["held_rate"] == k / len(held) and c["n_held"] == len(held)
    lo, hi = c["held_interval"]
    assert (lo, hi) == wilson_interval(k, len(held)) and lo <= c["held_rate"] <= hi
    # the threshold is not the one the whole set (or the held half) would give
    assert det.threshold != tpr_threshold(s[held], 0.9)


def test_a_score_equal_to_the_threshold_is_in(energy_det, data):
    det, (_, test) = energy_det, data
    s = det.scores(test, batch_size=64)
    at = int(np.flatnonzero(s.astype(np.float64) == det.threshold)[0])
    rows = det.predict(test, batch_size=64)
    assert rows[at]["score"] == det.threshold and rows[at]["decision"] == "in"
    assert all((r["decision"] == "in") == (r["score"] >= det.threshold) for r in rows)
    assert {r["decision"] for r in rows} == {"in", "out"}


def test_split_seed_changes_the_halves_and_is_recorded(data):
    fit, test = data
    a = fit_detector(tiny_net(), "msp", {}, fit, test, model_spec=SPEC, seed=0)
    b = fit_detector(tiny_net(), "msp", {}, fit, test, model_spec=SPEC, seed=1)
    assert a.calibration["split_seed"] == 0 and b.calibration["split_seed"] == 1
    assert not torch.equal(a.calibration["calib_index"], b.calibration["calib_index"])
    c = fit_detector(tiny_net(), "msp", {}, fit, test, model_spec=SPEC, seed=0)
    assert torch.equal(a.calibration["calib_index"], c.calibration["calib_index"]) and a.threshold == c.threshold


def test_predict_rows_carry_class_and_probability(energy_det, data):
    det, (_, test) = energy_det, data
    x = test[:5].float() / 255
    rows = det.predict(x)
    with torch.no_grad():
        p = torch.softmax(det.model(x).double(), dim=1)
    assert [r["class_index"] for r in rows] == p.argmax(1).tolist()
    assert [r["probability"] for r in rows] == pytest.approx(p.max(1).values.tolist(), abs=1e-6)
    assert rows[0]["predicted_class"] == str(rows[0]["class_index"])   # no class names given
    assert set(rows[0]) == {"score", "threshold", "decision", "predicted_class", "class_index", "probability"}
    with pytest.raises(DetectorError, match="do not match the detector's input"):
        det.predict(torch.rand(2, 3, 16, 16))


# ----------------------------------------------------------------------------------------------
# The file
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scorer, params", [("energy", {}), ("knn", {"k": 5}), ("react", {}), ("odin", {}),
                                            ("neco", {})])
def test_save_load_round_trip_gives_identical_predictions(tmp_path, data, scorer, params):
    fit, test = data
    det = fit_detector(tiny_net(), scorer, params, fit, test, model_spec=SPEC, profile="synthetic",
                       classes=[f"c{i}" for i in range(10)])
    path = det.save(tmp_path / "det.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.pt"]        # one file, no temporary left
    blob = torch.load(path, weights_only=True)                               # plain data only
    assert blob["format"] == "ood-detector" and blob["scorer"]["name"] == scorer
    back = Detector.load(path)
    x = test[:17]
    assert back.predict(x) == det.predict(x)
    assert back.threshold == det.threshold and back.calibration["held_interval"] == det.calibration["held_interval"]
    assert back.input_spec["classes"][0] == "c0" and back.predict(x)[0]["predicted_class"].startswith("c")
    assert back.input_spec["image_size"] == 32 and back.input_spec["profile"] == "synthetic"
    if scorer == "react":   # the fitted threshold travels in the state; the parameter stays as asked (None)
        assert back.scorer_params["threshold"] is None and back.scorer.threshold == det.scorer.threshold
        assert math.isfinite(back.scorer.threshold)


def test_run_folder_provenance(tmp_path, data):
    fit, test = data
    run = write_run(tmp_path / "runs" / "synthetic" / "ce" / "seeds" / "2", seed=2)
    det = fit_detector(run, "energy", {}, fit, test, profile="synthetic")
    import hashlib

    p = det.provenance
    assert p["checkpoint_sha256"] == hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()
    assert (p["method"], p["seed"], p["profile"]) == ("ce", 2, "synthetic") and p["checkpoint"].endswith("model.pt")
    assert det.model_spec == SPEC


def _features(n, seed):
    model = tiny_net()
    x = images(n, seed).float() / 255
    pen, logits, _ = extract(model, [(x, torch.arange(n) % 10)])
    return model, x, pen, logits, torch.arange(n) % 10


@pytest.mark.parametrize("name", list(SCORERS))
def test_every_registered_scorer_state_round_trips(name):
    model, _, pen, logits, labels = _features(80, 5)
    _, x_new, pen_new, logits_new, _ = _features(30, 6)
    fresh = build_scorer(name, **DEFAULTS[name])
    fitted = build_scorer(name, **DEFAULTS[name])
    if fitted.needs_fit:
        fitted.fit_features(pen, logits, labels, model)
    # every attribute fitting sets or changes is declared in fit_state (nothing a saved file could miss)
    before = vars(fresh)

    def same(a, b):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
        return a == b

    changed = {k for k, v in vars(fitted).items() if k not in before or not same(v, before[k])}
    assert changed or not fitted.needs_fit or name == "react" and fitted._fixed
    assert changed <= set(fitted.fit_state), (name, changed - set(fitted.fit_state))
    assert set(fitted.required_state()) <= set(fitted.fit_state)
    # through a file: torch.save / torch.load(weights_only=True)
    buf = io.BytesIO()
    torch.save(fitted.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    back = build_scorer(name, **DEFAULTS[name]).load_state_dict(state)

    def score(s):
        return s.score(model, x_new) if s.needs_network else s.score_features(pen_new, logits_new, model)

    assert torch.equal(score(back), score(fitted)), name
    # an unfitted state is refused exactly when scoring needs a fitted one
    if fitted.required_state():
        with pytest.raises(ValueError, match="needs its fitted state"):
            build_scorer(name, **DEFAULTS[name]).load_state_dict(fresh.state_dict())
        key = fitted.required_state()[-1]
        with pytest.raises(ValueError, match=f"lacks {key}"):
            build_scorer(name, **DEFAULTS[name]).load_state_dict({k: v for k, v in state.items() if k != key})
    else:
        build_scorer(name, **DEFAULTS[name]).load_state_dict(fresh.state_dict())


def test_load_state_dict_refuses_unknown_attributes_and_other_hyperparameters():
    model, _, pen, logits, labels = _features(80, 5)
    knn = build_scorer("knn", k=5).fit_features(pen, logits, labels, model)
    with pytest.raises(ValueError, match="does not know: nonsense"):
        build_scorer("knn", k=5).load_state_dict({**knn.state_dict(), "nonsense": 1})
    with pytest.raises(ValueError, match="fitted with k=5"):
        build_scorer("knn", k=7).load_state_dict(knn.state_dict())
    with pytest.raises(TypeError, match="cannot hold"):
        bad = build_scorer("energy")
        bad.extra = object()
        bad.state_dict()


def test_neco_without_standardizing_needs_no_feature_statistics():
    model, _, pen, logits, labels = _features(80, 5)
    neco = build_scorer("neco", standardize=False).fit_features(pen, logits, labels, model)
    assert "feature_mean" not in neco.required_state() and "feature_mean" in build_scorer("neco").required_state()
    build_scorer("neco", standardize=False).load_state_dict(neco.state_dict())


def test_load_refuses_files_that_are_not_detectors(tmp_path, energy_det):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(DetectorError, match="is not a detector file"):
        Detector.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {}, "model": SPEC}, tmp_path / "ckpt.pt")
    with pytest.raises(DetectorError, match="no 'format: ood-detector'"):
        Detector.load(tmp_path / "ckpt.pt")
    blob = energy_det.to_blob()
    torch.save({**blob, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(DetectorError, match="layout version 99"):
        Detector.load(tmp_path / "v99.pt")
    with pytest.raises(FileNotFoundError):
        Detector.load(tmp_path / "absent.pt")


# ----------------------------------------------------------------------------------------------
# Image files
# ----------------------------------------------------------------------------------------------

def _png_folder(folder: Path) -> Path:
    """Four files: RGB 32x32, grayscale 32x32, RGB 64x64, RGBA 40x48 (w x h)."""
    folder.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(0)
    Image.fromarray(r.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "a_rgb.png")
    Image.fromarray(r.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(folder / "b_gray.png")
    Image.fromarray(r.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "c_big.png")
    Image.fromarray(r.integers(0, 256, (48, 40, 4), dtype=np.uint8), "RGBA").save(folder / "d_rgba.png")
    (folder / "notes.txt").write_text("not an image; skipped in a folder")
    return folder


def test_read_images_converts_and_resizes_as_stated(tmp_path):
    folder = _png_folder(tmp_path / "imgs")
    files = sorted(folder.glob("*.png"))
    x, notes = read_images(files, {"image_size": 32, "resize": 32})
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    gray = np.asarray(Image.open(folder / "b_gray.png"))
    assert torch.equal(x[1], torch.from_numpy(np.stack([gray] * 3)))          # L -> RGB repeats the channel
    assert torch.equal(x[0], torch.from_numpy(np.array(Image.open(folder / "a_rgb.png"))).permute(2, 0, 1))
    big = Image.open(folder / "c_big.png").resize((32, 32), Image.BILINEAR)   # square: a plain bilinear resize
    assert (x[2].permute(1, 2, 0).numpy().astype(int) - np.asarray(big).astype(int)).__abs__().max() <= 1
    assert [n["converted"] for n in notes] == [False, True, False, True]
    assert [n["resized"] for n in notes] == [False, False, True, True]
    line = conversion_note(notes, {"image_size": 32, "resize": 32})
    assert line == ("4 images read; 1 converted from L to RGB; 1 converted from RGBA to RGB (alpha dropped); "
                    "1 resized from 40x48 and 1 from 64x64 to 32x32 (shorter side to 32 px, bilinear, then centre "
                    "crop)")


def test_a_failed_write_leaves_no_file(tmp_path, energy_det, monkeypatch):
    from ood.cli_detect import write_rows

    good = {"path": "a.png", "score": 1.0, "threshold": 0.5, "decision": "in", "predicted_class": "0",
            "probability": 0.5}
    with pytest.raises(TypeError):
        write_rows([good, {**good, "score": object()}], tmp_path / "rows.json", as_json=True)   # fails mid-dump
    assert list(tmp_path.iterdir()) == []

    def half_then_fail(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        energy_det.save(tmp_path / "det.pt")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# The command line, in a tiny repository root
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """params.yaml + profiles/{synthetic,other}.yaml (the synthetic profile at 100/80/40 images, SmallNet width 4,
    two OOD sets, novel-objects the near one), and runs/synthetic/ce/seeds/0 with a random model of that spec."""
    root = tmp_path_factory.mktemp("repo")
    (root / "params.yaml").write_text("profile: synthetic\nseeds: [0]\n")
    block = yaml.safe_load((ROOT / "profiles" / "synthetic.yaml").read_text())["synthetic"]
    block["benchmark"]["sizes"] = {"train": 100, "test": 80, "ood": 40, "aux": 10}
    block["benchmark"]["ood"] = {"novel-objects": "synthetic-novel-objects", "noise": "synthetic-noise"}
    block["model"] = {"name": "smallnet", "width": 4, "depth": 1, "mean": [0.5] * 3, "std": [0.25] * 3}
    block["evaluate"]["params"] = {"knn": {"k": 5}}
    (root / "profiles").mkdir()
    (root / "profiles" / "synthetic.yaml").write_text(yaml.safe_dump({"synthetic": block}))
    (root / "profiles" / "other.yaml").write_text(yaml.safe_dump({"other": block}))
    write_run(root / "runs" / "synthetic" / "ce" / "seeds" / "0")
    return root


@pytest.fixture
def in_root(tiny_root, monkeypatch):
    monkeypatch.setenv("OOD_ROOT", str(tiny_root))
    monkeypatch.delenv("OOD_PARAMS", raising=False)
    monkeypatch.chdir(tiny_root)
    return tiny_root


@pytest.fixture(scope="module")
def fitted_file(tiny_root):
    """det.pt from ``fit-detector`` (knn, k from the profile) and its stdout."""
    import os

    old = os.environ.get("OOD_ROOT")
    os.environ["OOD_ROOT"] = str(tiny_root)
    try:
        out = io.StringIO()
        from contextlib import redirect_stdout

        with redirect_stdout(out):
            rc = main(["fit-detector", "--run", str(tiny_root / "runs/synthetic/ce/seeds/0"), "--scorer", "knn",
                       "--tpr", "0.9", "--out", str(tiny_root / "det.pt"), "--device", "cpu"])
    finally:
        if old is None:
            del os.environ["OOD_ROOT"]
        else:
            os.environ["OOD_ROOT"] = old
    assert rc == 0
    return tiny_root / "det.pt", out.getvalue()


def test_cli_fit_detector_reports_the_held_rate_and_each_ood_fpr(fitted_file, tiny_root):
    path, stdout = fitted_file
    det = Detector.load(path)
    c = det.calibration
    lo, hi = c["held_interval"]
    assert det.scorer_name == "knn" and det.scorer_params == {"k": 5}           # the profile's evaluate.params
    assert det.provenance["profile"] == "synthetic" and det.input_spec["classes"][0] == "circle"
    assert c["n_calib"] == 40 and c["n_held"] == 40
    assert (f"held-out ID rate (TPR) {100 * c['held_rate']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] "
            f"(Wilson score 95%, {c['held_accepted']} of 40 held-out ID-test images)") in stdout
    for name in ("novel-objects", "noise"):
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"FPR {name}: "))
        assert line.endswith("of 40 OOD images accepted as ID)")
    # the printed FPR is the fraction of that set's scores at or above the threshold
    from ood.data import load

    ds = load("synthetic-noise", "test", tiny_root / "data", n=40)
    k = int((det.scores(ds).astype(np.float64) >= det.threshold).sum())
    assert f"FPR noise: {100 * k / 40:.2f}% ({k} of 40" in stdout


def _run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_detect_csv_and_json(fitted_file, tmp_path, capsys):
    path, _ = fitted_file
    folder = _png_folder(tmp_path / "imgs")
    rc, out, err = _run(["detect", str(path), str(folder), "--device", "cpu"], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["path"]).name for r in rows] == ["a_rgb.png", "b_gray.png", "c_big.png", "d_rgba.png"]
    assert list(rows[0]) == ["path", "score", "threshold", "decision", "predicted_class", "probability"]
    # the conversions, each stated once, on one stderr line
    assert err.count("\n") == 1 and err.count("converted from L to RGB") == 1
    assert err.count("from 64x64") == 1 and err.count("resized from") == 1 and err.count("converted from RGBA") == 1
    # the rows are the detector's predictions of the prepared images
    det = Detector.load(path)
    x, _ = read_images(sorted(folder.glob("*.png")), det.input_spec)
    want = det.predict(x)
    assert [float(r["score"]) for r in rows] == [w["score"] for w in want]
    assert [r["decision"] for r in rows] == [w["decision"] for w in want]
    assert {r["predicted_class"] for r in rows} <= set(det.classes)
    # JSON to a file: the same rows; nothing on stdout
    rc, out, err = _run(["detect", str(path), str(folder), "--json", "--out", str(tmp_path / "rows.json"),
                         "--device", "cpu"], capsys)
    assert rc == 0 and out == "" and err.count("\n") == 1
    got = json.loads((tmp_path / "rows.json").read_text())
    assert [g["score"] for g in got] == [w["score"] for w in want]
    assert [g["probability"] for g in got] == [w["probability"] for w in want]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "rows.json"]   # no temporary left
    # a single RGB file of the right size: nothing converted
    rc, out, err = _run(["detect", str(path), str(folder / "a_rgb.png"), "--device", "cpu"], capsys)
    assert rc == 0 and "1 image read; none needed converting" in err


def _tampered(src: Path, dst: Path, edit) -> Path:
    blob = torch.load(src, weights_only=True)
    edit(blob)
    torch.save(blob, dst)
    return dst


BAD_DETECT = {
    "corrupt image": ("corrupt", "cannot be read as an image"),
    "truncated image": ("truncated", "cannot be read as an image"),
    "empty folder": ("empty", "holds no image file"),
    "missing path": ("missing", "does not exist"),
    "fit state lacks bank": ("nobank", "needs its fitted state (bank, bank_sq), but the saved state lacks bank"),
    "unknown scorer in file": ("badscorer", "unknown scorer 'bogus'"),
    "not a detector": ("notdet", "is not a detector file"),
}


@pytest.mark.parametrize("case", list(BAD_DETECT))
def test_cli_detect_bad_input_one_line_status_2_no_output(case, fitted_file, tmp_path, capsys):
    path, _ = fitted_file
    kind, message = BAD_DETECT[case]
    folder = _png_folder(tmp_path / "imgs")
    inputs = [str(folder)]
    if kind == "corrupt":
        (folder / "e_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no png")
    elif kind == "truncated":
        data = (folder / "c_big.png").read_bytes()
        (folder / "e_cut.png").write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        (tmp_path / "empty").mkdir()
        inputs = [str(folder / "a_rgb.png"), str(tmp_path / "empty")]
    elif kind == "missing":
        inputs = [str(tmp_path / "nowhere.png")]
    elif kind == "nobank":
        path = _tampered(path, tmp_path / "det2.pt", lambda b: b["scorer"]["state"].pop("bank"))
    elif kind == "badscorer":
        path = _tampered(path, tmp_path / "det2.pt", lambda b: b["scorer"].__setitem__("name", "bogus"))
    elif kind == "notdet":
        path = ROOT / "params.yaml"
    out = tmp_path / "out" / "rows.csv"
    out.parent.mkdir()
    rc, stdout, err = _run(["detect", str(path), *inputs, "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert list(out.parent.iterdir()) == []          # no output file, no temporary


BAD_FIT = {
    "run and profile disagree": ("--profile other", "is a run of profile 'synthetic' (its path), but --profile is "
                                 "'other'"),
    "checkpoint spec not the profile's": ("wide", "does not match profile 'synthetic': its model kwargs is"),
    "unknown scorer": ("--scorer bogus", "unknown scorer 'bogus'; allowed: msp"),
    "unknown scorer parameter": ("--param q=1", "unknown parameter 'q' for scorer 'knn'"),
    "unknown profile": ("--profile nowhere", "unknown profile 'nowhere'; allowed: other, synthetic"),
    "profile not in the path": ("elsewhere", "cannot tell the profile of"),
    "no checkpoint": ("nockpt", "no trained model at"),
}


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_cli_fit_detector_bad_input_one_line_status_2_no_output(case, in_root, tmp_path, capsys):
    arg, message = BAD_FIT[case]
    run = in_root / "runs" / "synthetic" / "ce" / "seeds" / "0"
    extra = ["--scorer", "knn"]
    if arg == "wide":
        run = write_run(tmp_path / "runs" / "synthetic" / "ce" / "seeds" / "0",
                        spec={**SPEC, "kwargs": {"width": 8, "depth": 1}})
    elif arg == "elsewhere":
        run = write_run(tmp_path / "my-run")
    elif arg == "nockpt":
        run = tmp_path / "runs" / "synthetic" / "ce" / "seeds" / "9"
    elif arg.startswith("--scorer"):
        extra = arg.split()
    else:
        extra += arg.split()
    out = tmp_path / "out" / "det.pt"
    out.parent.mkdir()
    rc, stdout, err = _run(["fit-detector", "--run", str(run), *extra, "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert list(out.parent.iterdir()) == []


def test_cli_fit_detector_with_an_explicit_profile_for_a_folder_outside_runs(in_root, tmp_path, capsys):
    run = write_run(tmp_path / "my-run")
    rc, out, err = _run(["fit-detector", "--run", str(run), "--profile", "synthetic", "--scorer", "energy",
                         "--out", str(tmp_path / "d.pt"), "--device", "cpu"], capsys)
    assert rc == 0, err
    det = Detector.load(tmp_path / "d.pt")
    assert det.provenance["profile"] == "synthetic" and det.provenance["method"] == "ce"
    assert "held-out ID rate (TPR)" in out and "FPR novel-objects: " in out


def test_help_lists_the_detector_commands():
    from ood.__main__ import parser

    text = parser().format_help()
    assert "fit-detector" in text and "detect" in text


# ----------------------------------------------------------------------------------------------
# The tour
# ----------------------------------------------------------------------------------------------

def test_tour_detector_flags_held_id_images_and_each_ood_set(in_root):
    from ood.tour import tour_detector

    params = config.load_params(in_root / "params.yaml")
    df = tour_detector(params, in_root / "runs" / "synthetic" / "ce" / "seeds" / "0", per_set=3, scorer="energy")
    det = df.attrs["detector"]
    assert list(df.columns) == ["set", "image", "truth", "score", "threshold", "decision", "predicted_class",
                                "probability", "correct"]
    assert df.groupby("set").size().to_dict() == {"id": 3, "novel-objects": 3, "noise": 3}
    ids = df[df.set == "id"]
    assert set(ids.image) <= set(det.calibration["held_index"].tolist())       # never a calibration image
    assert set(ids.image).isdisjoint(det.calibration["calib_index"].tolist())
    assert (df.threshold == det.threshold).all()
    assert ((df.decision == "in") == (df.score >= det.threshold)).all()
    assert (df.correct == ((df.decision == "in") == (df.truth == "ID"))).all()
    assert set(df.truth) == {"ID", "OOD"} and (df[df.set != "id"].truth == "OOD").all()
