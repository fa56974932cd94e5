"""The authors' training loop, timed: the reference side of ``train_speed.py``.

The data path, step and GReg+ sampling of ``energy_ood/CIFAR/train.py`` and ``Greg-OOD/train_sea.py``: a
torchvision-style dataset decoding each image to PIL behind ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``,
``ToTensor()``, ``Normalize(mean, std)``; ``torch.utils.data.DataLoader`` workers; fp32, NCHW; the gradient penalty
through ``torch.autograd.functional.jacobian`` (:func:`ood.losses.grad_penalty_reference`); GReg+ outliers by
scikit-learn ``KMeans(n_init=3)`` and the authors' per-cluster picking (:func:`reference_cluster_select`).
Only the package's public API is used.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from measure import LoopResult, PeakMemory, forever, now, sampling_pass, time_loop
from ood.data import ArrayDataset
from ood.losses import GradPenalty, StepOutputs, grad_penalty_reference
from ood.models import OODNet, build_from_spec

#: scikit-learn KMeans restarts in the authors' GReg+ code (``--n_init 3``).
SKLEARN_N_INIT = 3


def build_net(spec: dict, *, identity_normalization: bool = False) -> OODNet:
    """The network of ``spec`` (``{"name", "num_classes", "mean", "std", "kwargs"}``); with
    ``identity_normalization`` its ``normalize`` is the identity (mean 0, std 1), for inputs that the reference's
    ``Normalize`` transform has already normalized."""
    return build_from_spec({**spec, "mean": [0.0] * 3, "std": [1.0] * 3} if identity_normalization else spec)


class PILArrayDataset(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10.__getitem__`` does, over an in-memory uint8 ``(N, H, W, 3)`` array:
    ``Image.fromarray`` then the transform, per image (the authors' data path)."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        """Hold the images, labels and the per-image transform."""
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)

    def __getitem__(self, i: int):
        """``(transform(PIL image i), label i)``."""
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _pil_dataset(ds: ArrayDataset, mean, std) -> PILArrayDataset:
    """``ds`` behind the CIFAR training transforms of the OE / Energy-OE / GReg code."""
    import torchvision.transforms as T

    trf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    return PILArrayDataset(ds.images.permute(0, 2, 3, 1).contiguous().numpy(), ds.labels.numpy(), trf)


def _start_loader(make, workers: int):
    """``(iterator, workers used, note)``: an endless iterator over ``make(workers)`` whose first batch is already
    fetched (so a worker failure shows here); falls back to ``num_workers=0`` if workers cannot start."""
    try:
        it = forever(make(workers))
        first = next(it)
        note = ""
    except (RuntimeError, OSError) as e:
        if workers == 0:
            raise
        it = forever(make(0))
        first = next(it)
        note = f"DataLoader workers could not start here ({type(e).__name__}: {e}); used num_workers=0"
        workers = 0

    def chained():
        """The fetched first batch, then the rest."""
        yield first
        yield from it

    return chained(), workers, note


def reference_cluster_select(model: OODNet, candidates: torch.Tensor, n_out: int, k: int, n_init: int = SKLEARN_N_INIT,
                             rng: random.Random | None = None, seed: int | None = None) -> torch.Tensor:
    """GReg+ outlier selection as ``clusterAndChooseSamples`` of github.com/o4lc/Greg-OOD ``train_sea.py`` does it
    (``--oodMethod energy --repr norm --sampleTwoWay --spt 0``), returning the picked candidates.

    A no_grad forward of the pool (the caller has put the model in eval mode, as the authors' loop does), energies
    to the host (``.tolist()``), sort; the L2-normalized penultimate features to the host; scikit-learn
    ``KMeans(n_clusters=k, n_init=n_init)`` on the CPU; then, cluster by cluster in Python, the lowest- and the
    highest-energy member(s); fill up to ``n_out`` with a random sample of the rest. ``n_out`` is the two-way
    total (the authors' ``2 * batch_size_sampled_ood``).
    """
    from sklearn.cluster import KMeans

    rng = rng or random.Random(seed)
    with torch.no_grad():
        pen = model.pool(model.features(candidates))
        logits = model.head(pen)
    energies = np.array((-torch.logsumexp(logits, dim=1)).tolist())
    idxs_sorted = np.argsort(energies)
    weights = energies[idxs_sorted]
    reprs = F.normalize(pen.cpu(), dim=-1).numpy()[idxs_sorted]
    labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(reprs).labels_
    per_way = n_out // 2
    per_cluster = 1 if k > per_way else per_way // k
    picked: list[int] = []
    for i in range(min(k, per_way)):
        valid = np.where(labels == i)[0]
        if len(valid) <= per_cluster:
            picked.extend(idxs_sorted[valid])
        else:
            order = np.argsort(weights[valid])
            low = idxs_sorted[valid[order[:per_cluster]]]
            high = idxs_sorted[valid[order[-per_cluster:]]]
            picked.extend(np.unique(np.concatenate([low, high])))
    if n_out > len(picked):
        picked.extend(rng.sample(sorted(set(idxs_sorted.tolist()) - set(int(p) for p in picked)),
                                 k=n_out - len(picked)))
    return candidates[[int(p) for p in picked[:n_out]]]


def run_reference(spec, mspec: dict, data, device: torch.device, warmup: int, steps: int,
                  seed: int = 0, workers: int = 2) -> LoopResult:
    """Time a training step written like the authors' code: PIL transforms through DataLoader workers, fp32 NCHW,
    one forward for CE / energy margin / background terms, the GReg penalty by ``autograd.functional.jacobian``
    on a second forward, GReg+ sampling by scikit-learn on the CPU. ``spec``: a ``train_speed.MethodSpec`` (the
    method's configuration, loss terms, batch sizes); ``data``: a ``train_speed.BenchData`` (ID and outlier sets)."""
    from torch.utils.data import DataLoader

    cfg = spec.cfg
    torch.manual_seed(seed)
    model = build_net(mspec, identity_normalization=True).to(device)  # inputs come normalized by the transforms
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    all_terms = spec.build_terms()
    penalty = next((t for t in all_terms if isinstance(t, GradPenalty)), None)
    terms = [t for t in all_terms if t is not penalty]
    pin = device.type == "cuda"
    id_ds = _pil_dataset(data.id_train, mspec["mean"], mspec["std"])
    aux_ds = _pil_dataset(data.aux, mspec["mean"], mspec["std"])
    aux_batch = spec.pool if cfg.sampler else spec.n_out
    k = (cfg.sampler.get("num_clusters") or max(1, spec.n_out // 2)) if cfg.sampler else 0
    rng = random.Random(seed)
    timer = {"seconds": 0.0}
    torch.manual_seed(seed)
    notes = []
    with PeakMemory(device) as mem:
        id_it, used, note = _start_loader(lambda w: DataLoader(id_ds, batch_size=spec.n_id, shuffle=True, num_workers=w,
                                                               pin_memory=pin, drop_last=True), workers)
        notes += [note] if note else []
        aux_it = None
        if spec.n_out:
            aux_it, _, note = _start_loader(
                lambda w: DataLoader(aux_ds, batch_size=aux_batch, shuffle=True, num_workers=w, pin_memory=pin,
                                     drop_last=True), used)
            notes += [note] if note else []

        def step(time_sampling=False):
            """One training step of the reference; adds the sampling time to ``timer`` if ``time_sampling``."""
            x_id, y = next(id_it)
            x_id, y = x_id.to(device), y.to(device)
            x_out = None
            if spec.n_out:
                x_out = next(aux_it)[0].to(device)
                if cfg.sampler:
                    t0 = now(device) if time_sampling else 0.0
                    model.eval()  # train_sea.py: clf.eval() before sampling, clf.train() after
                    x_out = reference_cluster_select(model, x_out, spec.n_out, k, rng=rng, seed=seed)
                    model.train()
                    if time_sampling:
                        timer["seconds"] += now(device) - t0
            x = x_id if x_out is None else torch.cat([x_id, x_out])
            xn = model.normalize(x)
            fmap = model.body(xn)
            pen = model.pool(fmap)
            logits = model.head(pen)
            out = StepOutputs(model=model, xn=xn, fmap=fmap, pen=pen, logits=logits, y=y, n_id=spec.n_id,
                              epoch=spec.epoch)
            values = [t(out) for t in terms]
            if penalty is not None:
                values.append(grad_penalty_reference(model, x_id, x_out, m_in=penalty.m_in, m_out=penalty.m_out,
                                                     scaling=penalty.scaling, weight=penalty.weight))
            loss = torch.stack(values).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec = time_loop(step, device, warmup, steps)
    res = LoopResult(sec, mem.bytes, mem.note, workers=used, notes=notes)
    if cfg.sampler:
        res.sampling_seconds_per_step, res.sampling_share = sampling_pass(lambda: step(True), timer, device, steps)
    return res
