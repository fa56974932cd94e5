"""The streaming data path of the full-resolution (ImageNet) profile, on small image trees the tests write."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from ood import benchmark, config
from ood.benchmark import load_imagenet_subset
from ood.data import DataMissingError, FolderDataset, Loader, folder_dataset


def _jpeg(path, rng, h=40, w=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)


@pytest.fixture()
def tree(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "eel"):
        for i in range(5):
            _jpeg(tmp_path / "set" / c / f"{i}.jpg", rng, h=36 + 3 * i, w=44)
    return tmp_path / "set"


def _ds(folder, **kw):
    return folder_dataset("tiny", folder, **{"image_size": 32, "resize": 36, "workers": 0, **kw})


def test_folder_dataset_lists_classes_in_sorted_order_with_labels(tree):
    ds = _ds(tree)
    assert ds.classes == ("cat", "dog", "eel") and len(ds) == 15
    assert ds.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    sub = _ds(tree, classes=["eel", "cat"])   # a class subset: labels follow the given order
    assert sub.classes == ("eel", "cat") and sub.labels.tolist() == [0] * 5 + [1] * 5
    assert all("/eel/" in f for f in sub.files[:5])
    unl = _ds(tree, labelled=False)
    assert unl.classes is None and set(unl.labels.tolist()) == {-1}


def test_training_batches_are_reproducible_and_independent_of_workers(tree):
    ds = _ds(tree)

    def epoch(workers, seed):
        d = FolderDataset(ds.name, ds.files, ds.labels, ds.classes, 32, 36, workers)
        loader = Loader(d, 4, shuffle=True, augment=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
        return list(loader)

    a, b, c = epoch(0, 1), epoch(2, 1), epoch(0, 2)
    assert len(a) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == (4, 3, 32, 32) and xa.dtype == torch.float32 and 0 <= xa.min() and xa.max() <= 1
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_evaluation_batches_are_resize_then_center_crop_in_order(tree):
    import torchvision.transforms as T

    ds = _ds(tree)
    x, y = next(iter(Loader(ds, 5)))
    with Image.open(ds.files[3]) as im:
        ref = T.Compose([T.Resize(36), T.CenterCrop(32), T.PILToTensor()])(im.convert("RGB"))
    assert torch.equal(x[3], ref.float() / 255)
    assert y.tolist() == [0] * 5
    assert torch.equal(ds.head(2), (x[:2] * 255).round().to(torch.uint8))


def test_draw_streams_outliers_past_one_pass(tree):
    ds = _ds(tree, labelled=False)
    g = torch.Generator().manual_seed(0)
    draws = [ds.draw(4, g, True, "cpu") for _ in range(6)]   # 24 images from a set of 15: a second pass
    assert all(d.shape == (4, 3, 32, 32) for d in draws)
    with pytest.raises(ValueError, match="cannot draw 20 images from a set of 15"):
        ds.draw(20, g, False, "cpu")


def test_subset_and_fingerprint(tree):
    ds = _ds(tree)
    sub = ds.subset(6, seed=3)
    assert len(sub) == 6 and sub.files == ds.subset(6, seed=3).files
    assert set(sub.files) <= set(ds.files)
    assert sub.fingerprint() != ds.fingerprint() and ds.fingerprint() == _ds(tree).fingerprint()


def test_missing_class_folder_names_it(tree):
    with pytest.raises(DataMissingError, match="class folder .*/zebra is missing"):
        _ds(tree, classes=["cat", "zebra"])
    with pytest.raises(DataMissingError, match="missing folder"):
        _ds(tree / "nothing")


def _rule_consistent_wnids() -> list[str]:
    """1,000 sorted class names in which GReg's rule (perm = RandomState(1993).permutation(1000), label perm[k])
    puts each imagenet20 wnid at the position of its label; the other names are made up to sort in between."""
    perm = np.random.RandomState(benchmark.IMAGENET_AUX_RULE["seed"]).permutation(1000)
    ids = load_imagenet_subset("imagenet20")   # imagenet10 is its labels 0-9
    fixed = {int(np.flatnonzero(perm == label)[0]): wnid for label, wnid in enumerate(ids)}
    names, prev = [], "n00000000"
    for k in range(1000):
        prev = fixed.get(k, prev)
        names.append(fixed[k] if k in fixed else f"{prev}_{k:04d}")
    return names


def test_imagenet_subset_labels_follow_the_permutation_rule():
    """ood/imagenet_subsets.yaml's labels agree with the rule it states: in sorted wnid order, the imagenet10 classes
    sit at the positions k with perm[k] = their label (else no sorted list of names could put them there)."""
    names = _rule_consistent_wnids()
    assert names == sorted(names) and len(set(names)) == 1000


@pytest.fixture()
def imagenet_root(tmp_path):
    """<root>/imagenet/{train,val}/<wnid>/ with the 20 GReg classes (4 train and 2 val images each) and 980 others
    (one train image each), and the four OOD folders."""
    rng = np.random.default_rng(1)
    ids = load_imagenet_subset("imagenet20")
    names = _rule_consistent_wnids()
    others = [w for w in names if w not in ids]
    root = tmp_path / "data"
    for w in ids:
        for i in range(4):
            _jpeg(root / "imagenet" / "train" / w / f"{i}.JPEG", rng, 20, 24)
        for i in range(2):
            _jpeg(root / "imagenet" / "val" / w / f"{i}.JPEG", rng, 20, 24)
    for w in others:
        _jpeg(root / "imagenet" / "train" / w / "0.JPEG", rng, 12, 12)
    for folder in ("iNaturalist/images", "SUN/images", "Places/images", "dtd/images/banded"):
        for i in range(6):
            _jpeg(root / folder / f"{i}.jpg", rng, 20, 20)
    return root


def _tiny_imagenet_params():
    params = copy.deepcopy(config.load_params())
    b = params["profiles"]["imagenet"]
    b["benchmark"].update(image_size=16, resize=18, workers=0)
    b["model"] = dict(params["profiles"]["synthetic"]["model"])
    for r in b["recipes"].values():
        r.update(epochs=1, batch_size=8, steps_per_epoch=2)
        if "out_batch_size" in r:
            r["out_batch_size"] = 4
    return params


def test_imagenet_profile_trains_and_evaluates_from_the_files(imagenet_root, tmp_path):
    from ood.evaluate import evaluate
    from ood.models import load_model
    from ood.train import train

    params = _tiny_imagenet_params()
    bench = benchmark.load_benchmark(params, "imagenet", data_root=imagenet_root)
    assert isinstance(bench.id_train, FolderDataset) and len(bench.id_train) == 40 and len(bench.id_test) == 20
    assert list(bench.id_train.classes) == load_imagenet_subset("imagenet10")
    assert set(bench.ood) == {"inaturalist", "sun", "places", "textures"}
    aux = bench.aux   # imagenet-other: every class outside the 10 ID classes (Greg-OOD's loader)
    aux_classes = {f.split("/")[-2] for f in aux.files}
    assert len(aux_classes) == 990 and len(aux) == 980 + 10 * 4 and set(aux.labels.tolist()) == {-1}
    assert not aux_classes & set(bench.id_train.classes)   # disjoint from the ID classes
    assert set(load_imagenet_subset("imagenet20")) - set(bench.id_train.classes) <= aux_classes
    assert len(benchmark.data_manifest(bench)) == 7

    spec = config.model_spec(params, "imagenet", "ce")
    hist = train(config.method_config(params, "ce", "imagenet"), spec, bench.id_train, tmp_path / "ce",
                 id_test=bench.id_test, device="cpu", progress=False)
    assert len(hist) == 1 and 0 <= hist["test_accuracy"].iloc[0] <= 100
    cfg = config.method_config(params, "greg_plus", "imagenet")   # outliers streamed, picked by the cluster sampler
    assert cfg.init == "ce" and cfg.optimizer == "adam"      # fine-tuned from CE, as Greg-OOD's README command
    hist = train(cfg, spec, bench.id_train, tmp_path / "greg_plus", aux=bench.aux, id_test=bench.id_test,
                 init_dir=tmp_path / "ce", device="cpu", progress=False)
    assert np.isfinite(hist["loss_grad_penalty"].iloc[0])
    res = evaluate(load_model(tmp_path / "greg_plus"), id_train=bench.id_train, id_test=bench.id_test,
                   ood_sets=bench.ood, scorers={"energy": {}, "odin": {}, "knn": {"k": 5}}, benchmark="imagenet",
                   method="greg_plus", batch_size=8, progress=False)
    assert set(res.metrics["ood_set"]) == {"inaturalist", "sun", "places", "textures", "average"}
    assert res.metrics[["fpr95", "auroc"]].notna().all().all()


def test_imagenet_20_classes_and_the_other_auxiliary_sets(imagenet_root):
    """The README commands' 20-class subset: 20 ID classes, labels in the file's order, 980 auxiliary classes; the
    older imagenet-aux100 set is the 100 classes with 100 <= perm[k] < 200 (oracle: the permutation, numpy)."""
    params = _tiny_imagenet_params()
    params["profiles"]["imagenet"]["benchmark"].update(subset="imagenet20", num_classes=20)
    bench = benchmark.load_benchmark(params, "imagenet", data_root=imagenet_root)
    assert list(bench.id_train.classes) == load_imagenet_subset("imagenet20") and len(bench.id_test) == 40
    assert len({f.split("/")[-2] for f in bench.aux.files}) == 980 and len(bench.aux) == 980
    params["profiles"]["imagenet"]["benchmark"]["aux"] = "imagenet-aux100"
    bench = benchmark.load_benchmark(params, "imagenet", data_root=imagenet_root)
    names = _rule_consistent_wnids()
    perm = np.random.RandomState(1993).permutation(1000)
    assert {f.split("/")[-2] for f in bench.aux.files} == {names[k] for k in range(1000) if 100 <= perm[k] < 200}
    params["profiles"]["imagenet"]["benchmark"].update(num_classes=10)
    with pytest.raises(config.ParamError, match="num_classes is 10 but the ID classes are 20"):
        benchmark.load_benchmark(params, "imagenet", data_root=imagenet_root)
    params["profiles"]["imagenet"]["benchmark"].update(num_classes=20, aux="imagenet-all")
    with pytest.raises(config.ParamError, match="allowed: imagenet-other, imagenet-aux100, null"):
        benchmark.load_benchmark(params, "imagenet", data_root=imagenet_root)


def test_imagenet_profile_without_data_says_where_to_put_it(tmp_path):
    with pytest.raises(DataMissingError, match="imagenet: missing .*imagenet/train.*image-net.org"):
        benchmark.load_benchmark(config.load_params(), "imagenet", data_root=tmp_path)


def test_imagenet_aux_rule_needs_the_1000_classes(tmp_path):
    (tmp_path / "n0").mkdir()
    with pytest.raises(config.ParamError, match="1,000 ImageNet-1k class folders.*found 1"):
        benchmark.imagenet_aux_classes(tmp_path)


def test_imagenet_1k_as_id_refuses_imagenet_auxiliary_classes(imagenet_root):
    params = _tiny_imagenet_params()
    params["profiles"]["imagenet"]["benchmark"]["subset"] = None
    with pytest.raises(config.ParamError, match="all ID when benchmark.subset is null; set benchmark.aux to null"):
        benchmark.load_benchmark(params, "imagenet", data_root=imagenet_root)
