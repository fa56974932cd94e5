"""What ``python -m ood detect`` reads and writes: image files in (listed, decoded, converted to RGB and resized to
the detector's input), one row per image out (CSV or JSON).

Inputs (:func:`read_images`): each file is read with PIL; a mode other than RGB
(grayscale ``L``, ``RGBA``, palette ``P``, ...) is converted to RGB with PIL's ``convert("RGB")`` (alpha dropped),
as the profile's folder sets are decoded (``ood.data.folders``); an image not of the detector's input size is resized
so that its shorter side is ``input["resize"]`` pixels (bilinear, torchvision's ``resize`` on the PIL image, i.e.
PIL's antialiased bilinear filter) and centre-cropped to ``input["image_size"]`` (the 32x32 profiles: resize 32,
crop 32; the ImageNet profile: resize 256, crop 224, applied to every image as its test transform does); pixels
become float in [0, 1] (``/ 255``). Normalization is inside the model (``model.normalize``), as in training.

The detector itself (:class:`ood.detector.Detector`) takes tensors; this module is the command line's side of it.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ood.detector import DetectorError

__all__ = ["list_images", "read_images", "conversion_note", "write_rows", "IMAGE_SUFFIXES", "ROW_COLUMNS"]

#: File suffixes :func:`list_images` picks up in a folder (a file named on its own is read whatever its suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


# ----------------------------------------------------------------------------------------------
# Image files
# ----------------------------------------------------------------------------------------------

def list_images(inputs: Sequence) -> list[Path]:
    """The image files of ``inputs``: a file is taken as it is; a folder gives its files with an image suffix
    (:data:`IMAGE_SUFFIXES`, any case), recursively, sorted, hidden files skipped. DetectorError for a path that
    does not exist, a folder with no image file, or no input at all."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise DetectorError(f"the folder {p} holds no image file (looked for {', '.join(IMAGE_SUFFIXES)}, "
                                    "in subfolders too)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DetectorError(f"{p} does not exist; name image files or folders of images")
    if not out:
        raise DetectorError("no images given; name image files or folders of images")
    return out


def read_images(paths: Sequence, input_spec: dict) -> tuple[Tensor, list[dict[str, Any]]]:
    """The files ``paths`` as a uint8 tensor ``(N, 3, size, size)`` prepared as the module docstring says, and per
    file what was done: ``{"path", "mode", "size": (w, h), "converted": bool, "resized": bool}``. A file PIL cannot
    decode (unknown format, truncated, corrupt) raises DetectorError naming it."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    size = int(input_spec.get("image_size", 32))
    resize = int(input_spec.get("resize", size))
    arrays, notes = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                mode, wh = im.mode, im.size
                rgb = im.convert("RGB") if mode != "RGB" else im.copy()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            msg = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
            raise DetectorError(f"{p} cannot be read as an image ({type(e).__name__}: {msg}); remove it or "
                                "replace it with a valid image file") from None
        resized = not (resize == size and wh == (size, size))
        if resized:
            rgb = TF.center_crop(TF.resize(rgb, resize, interpolation=TF.InterpolationMode.BILINEAR), size)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
        notes.append({"path": str(p), "mode": mode, "size": wh, "converted": mode != "RGB", "resized": resized})
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x, notes


def conversion_note(notes: list[dict[str, Any]], input_spec: dict) -> str:
    """One line saying every conversion :func:`read_images` made, each kind once, e.g. ``5 images read; 1
    converted from L to RGB; 2 resized from 64x64 and 1 from 48x40 to 32x32 (shorter side to 32 px, bilinear,
    then centre crop)``; ``none needed converting`` when the files were RGB at the input size."""
    from collections import Counter

    size = int(input_spec.get("image_size", 32))
    resize = int(input_spec.get("resize", size))
    parts = []
    for mode, k in sorted(Counter(n["mode"] for n in notes if n["converted"]).items()):
        extra = " (alpha dropped)" if "A" in mode or mode == "P" else ""
        parts.append(f"{k} converted from {mode} to RGB{extra}")
    sizes = Counter(n["size"] for n in notes if n["resized"])
    if sizes:
        groups = [f"{k} from {w}x{h}" for (w, h), k in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))]
        groups[0] = groups[0].replace(" from ", " resized from ", 1)
        parts.append(f"{' and '.join(groups)} to {size}x{size} (shorter side to {resize} px, bilinear, then centre "
                     "crop)")
    head = f"{len(notes)} image{'s' if len(notes) != 1 else ''} read"
    return f"{head}; {'; '.join(parts)}" if parts else f"{head}; none needed converting"


ROW_COLUMNS = ("path", "score", "threshold", "decision", "predicted_class", "probability")


def write_rows(rows: list[dict[str, Any]], out, as_json: bool = False) -> None:
    """Write per-image rows as CSV (:data:`ROW_COLUMNS`) or a JSON list to ``out``: a path (a temporary file in
    the same folder, renamed at the end, so a failure leaves no partial file) or a text stream."""
    def dump(f):
        if as_json:
            json.dump([{k: r[k] for k in ROW_COLUMNS} for r in rows], f, indent=1)
            f.write("\n")
        else:
            w = csv.DictWriter(f, fieldnames=ROW_COLUMNS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    if hasattr(out, "write"):
        dump(out)
        return
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            dump(f)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
