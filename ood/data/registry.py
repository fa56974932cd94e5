"""The dataset registry: one ``DatasetInfo`` per set name (``DATASETS``), printed by ``describe(name)``.

Every set the notebooks use is a registry entry (``DATASETS``, printed by ``describe(name)``): its role
(``id``/``ood``/``aux``), where its files come from (original distribution URL), their checksums, where they
go under the data root, how images are preprocessed, and what to cite. ``mirror_list()`` reads the mirrors a
reader names (``$OOD_MIRRORS``), where each registry file is looked up by its file name before its official URL.

Test only: ``$OOD_TEST_CHECKSUMS`` (:data:`TEST_CHECKSUMS_ENV`) may name a JSON file ``{registry file path:
"md5:<hex>" | "sha256:<hex>"}`` whose checksums replace the official ones of those files when this module is
imported (:func:`apply_test_checksums`), so that the rehearsal of the paper profiles (tests/test_rehearsal.py) can
serve toy archives through the real readers, in the DVC stages' subprocesses too. Never set it for a real run: the
official checksums are the ones written below.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: Default sizes of the synthetic sets (``load(..., n=...)`` overrides) [ours: a CPU-sized CIFAR-like benchmark].
SYNTHETIC_SIZES = {"train": 10000, "test": 2000, "backgrounds": 2000, "novel-objects": 2000, "textures": 2000,
                   "noise": 2000, "aux": 10000}

#: Places365 OOD set: 10,000 test images, the size of the KNN/energy codebases' subset [code: knn-ood README].
PLACES365_N = 10000
#: Seed of our documented sample of the Places365 test images when their list file is absent [ours].
PLACES365_SAMPLE_SEED = 0


@dataclass(frozen=True)
class FileInfo:
    """One file of a dataset: its place under the data root, original URL, checksum and where those come from."""

    path: str                    # relative to the data root
    url: str | None              # original distribution URL (None: no public download)
    checksum: str | None         # "md5:<hex>" or "sha256:<hex>"; None = unverified (existence/readability only)
    source: str = ""             # where the URL and checksum were taken from
    extract_to: str | None = None  # archives: folder (relative to the root) they are extracted into


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry; ``describe(name)`` prints it."""

    name: str
    kind: str                          # id | ood | aux
    title: str
    splits: tuple[str, ...] | None     # None: a single set, the split argument is ignored
    files: tuple[FileInfo, ...]        # what is downloaded (an archive, or the data files themselves)
    preprocessing: str
    citation: str
    folders: tuple[str, ...] = ()      # image-folder sets: candidate folders under the root (first found is used)
    transform: str = "as_is"           # image-folder sets: resize_crop | center_crop | as_is
    size: dict = field(default_factory=dict)  # split -> number of images of the full set
    notes: str = ""
    resolution: str = "32"             # "32": load() gives an ArrayDataset; "full": load_folder() only
    decode_size: int | None = None     # image-folder sets decoded at this size whatever image_size load() is given
    derivation: str = ""               # derived sets: files[1] is the official archive and this the stated transform
                                       # that ood.data.derive.derive_set applies to it (files[0]: our derived copy)


_TV = "torchvision 0.29 source (torchvision/datasets/{})"
_C10 = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_C100 = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_CIFAR_CITE = "Krizhevsky, Learning Multiple Layers of Features from Tiny Images, tech. report, U. Toronto, 2009."
_ODIN_CITE = ("Liang, Li, Srikant, Enhancing the Reliability of Out-of-distribution Image Detection in Neural "
              "Networks (ODIN), ICLR 2018, who built the set")
_MOS_CITE = ("Huang & Li, MOS: Towards Scaling Out-of-distribution Detection for Large Semantic Space, CVPR 2021 "
             "(curated 10,000-image OOD subsets, concepts overlapping ImageNet-1k removed)")
_MOS_URL = "http://pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/"
_MOS_SRC = "URL: knn-ood README; md5: detectors (edadaltocg) source, one codebase, not recomputed by us"

#: The official DTD archive, read by ``textures``, ``imagenet-textures`` (extracted) and ``dtd10`` (derived from).
_DTD_ARCHIVE = FileInfo("dtd/dtd-r1.0.1.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                        "md5:fff73e5086ae6bdbea199a49dfb8a4c1", _TV.format("dtd.py"), extract_to="dtd")
#: The official TinyImageNet-200 archive (``tinyimagenet32`` is derived from its training images).
_TINY_ARCHIVE = FileInfo("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                         "md5:90528d7ca1a48142e341f4ef8d21d0de",
                         "URL: the official CS231n download; md5: Avalanche source (github.com/ContinualAI/avalanche, "
                         "avalanche/benchmarks/datasets/tiny_imagenet/tiny_imagenet.py) and other public TinyImageNet "
                         "downloaders, not recomputed by us")
#: The stated transforms of the derived sets (``DatasetInfo.derivation``; code: ood.data.derive.derive_set).
_DTD10_DERIVATION = (
    "from dtd-r1.0.1.tar.gz: every member dtd/images/<category>/<name>.jpg (suffix .jpg in any case; other files "
    "ignored) of the first 10 categories in sorted (code-point) order; each decoded by Pillow, convert('RGB'), resized "
    "so that its shorter side is 32 px, to (32, floor(32 * long / short)), with Image.resize(size, Image.BILINEAR) "
    "(Pillow's bilinear filter, antialiased when reducing: what torchvision.transforms.functional.resize(img, 32, "
    "InterpolationMode.BILINEAR, antialias=True) does to a PIL image), centre-cropped to 32x32 at left = round((w - "
    "32) / 2), top = round((h - 32) / 2) (Python's round, halves to even, as torchvision's center_crop), saved as PNG "
    "(Pillow's defaults) at dtd10-32/<category>/<name>.png, with dtd10-32/DERIVED.json")
_TINY_DERIVATION = (
    "from tiny-imagenet-200.zip: every member tiny-imagenet-200/train/<wnid>/images/<name>.JPEG (the 100,000 training "
    "images; the boxes files, val/ and test/ ignored); each decoded by Pillow, convert('RGB') (the grayscale ones "
    "replicated to 3 channels), resized from 64x64 to 32x32 with Image.resize((32, 32), Image.BILINEAR) (Pillow's "
    "bilinear filter, antialiased when reducing), saved as PNG (Pillow's defaults) at tinyimagenet32/train/<wnid>/"
    "<name>.png; tiny-imagenet-200/wnids.txt and words.txt copied unchanged to tinyimagenet32/, with "
    "tinyimagenet32/DERIVED.json")

_CIFAR10_FILES = (
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"), ("test_batch", "40351d587109b95175f43aff81a1287e"),
    ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
)
_CIFAR100_FILES = (
    ("train", "16019d7e3df5f24257cddd939b257f8d"), ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
    ("meta", "7973b15100ade9c7d40fb424638fde48"),
)


def _synthetic_entry(name: str, set_name: str, kind: str, title: str, splits) -> DatasetInfo:
    return DatasetInfo(
        name=name, kind=kind, title=title, splits=splits, files=(),
        preprocessing="none: generated at 32x32 by ood.synthetic.generate(set, n, seed); cached as "
                      "<root>/synthetic/<set>-s<seed>-n<n>.npz",
        citation="this project (ood/synthetic.py); no download",
        size={s: SYNTHETIC_SIZES[s] for s in (splits or (set_name,))},
    )


#: LSUN-C's archive, read by two registry sets: ``lsun-c`` (centre 32x32, GReg) and ``lsun-c-36`` (as stored, Energy).
_LSUN_C_FILES = (FileInfo("LSUN.tar.gz", "https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1",
                          "md5:458a0a0ab8e5f1cb4516d7400568e460",
                          "URL: ODIN README (facebookresearch/odin); md5: pytorch-ood and detectors (edadaltocg) "
                          "source, not recomputed by us", extract_to=""),)

DATASETS: dict[str, DatasetInfo] = {}


def _mos_entry(name: str, folder: str, checksum: str, citation: str) -> DatasetInfo:
    """One of the ImageNet OOD subsets of Huang & Li 2021 (MOS): 10,000 images, ``<folder>.tar.gz`` from their page."""
    return DatasetInfo(
        name=name, kind="ood", title=f"{folder} OOD subset for ImageNet (10,000 images)", splits=None,
        files=(FileInfo(f"{folder}.tar.gz", _MOS_URL + f"{folder}.tar.gz", checksum, _MOS_SRC, extract_to=""),),
        folders=(folder,), resolution="full",
        preprocessing="full resolution; load_folder with the ImageNet test transform",
        citation=f"{citation}; " + _MOS_CITE, size={"test": 10000},
    )


def _register(*infos: DatasetInfo) -> None:
    for info in infos:
        DATASETS[info.name] = info


_register(
    _synthetic_entry("synthetic", "train", "id", "Synthetic benchmark, ID: 10 object classes on procedural backgrounds",
                     ("train", "test")),
    _synthetic_entry("synthetic-backgrounds", "backgrounds", "ood",
                     "Synthetic OOD: the ID backgrounds with no object (shares the ID backgrounds)", None),
    _synthetic_entry("synthetic-novel-objects", "novel-objects", "ood",
                     "Synthetic OOD: unseen object shapes on the ID backgrounds", None),
    _synthetic_entry("synthetic-textures", "textures", "ood", "Synthetic OOD: new textures (no ID background)", None),
    _synthetic_entry("synthetic-noise", "noise", "ood", "Synthetic OOD: noise images", None),
    _synthetic_entry("synthetic-aux", "aux", "aux",
                     "Synthetic auxiliary outliers from disjoint generators (stands in for 300K random images)", None),
    DatasetInfo(
        name="cifar10", kind="id", title="CIFAR-10 (50,000 train / 10,000 test, 10 classes)", splits=("train", "test"),
        files=(FileInfo("cifar-10-python.tar.gz", _C10, "md5:c58f30108f718f92721af3b95e74349a", _TV.format("cifar.py"),
                        extract_to=""),)
        + tuple(FileInfo(f"cifar-10-batches-py/{f}", None, f"md5:{h}", _TV.format("cifar.py"))
                for f, h in _CIFAR10_FILES),
        preprocessing="none (32x32); the python pickles of the split (train: data_batch_1..5; test: test_batch) and "
                      "batches.meta, read directly after their md5 check, as torchvision.datasets.CIFAR10 reads them",
        citation=_CIFAR_CITE, size={"train": 50000, "test": 10000},
    ),
    DatasetInfo(
        name="cifar100", kind="id",
        title="CIFAR-100 (50,000 train / 10,000 test, 100 fine classes); also near-OOD for CIFAR-10",
        splits=("train", "test"),
        files=(FileInfo("cifar-100-python.tar.gz", _C100, "md5:eb9058c3a382ffc7106e4002c42a8d85",
                        _TV.format("cifar.py"), extract_to=""),)
        + tuple(FileInfo(f"cifar-100-python/{f}", None, f"md5:{h}", _TV.format("cifar.py"))
                for f, h in _CIFAR100_FILES),
        preprocessing="none (32x32); the python pickle of the split (cifar-100-python/train or test) and meta, read "
                      "directly after their md5 check, as torchvision.datasets.CIFAR100 reads them; fine labels",
        citation=_CIFAR_CITE, size={"train": 50000, "test": 10000},
    ),
    DatasetInfo(
        name="svhn", kind="ood", title="SVHN test set (26,032 digit crops)", splits=("test",),
        files=(FileInfo("svhn/test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                        "md5:eb5a983be6a315427106f1b164d9cef3", _TV.format("svhn.py")),),
        preprocessing="none (32x32), all 26,032 test images; read by torchvision.datasets.SVHN; labels set to -1",
        citation="Netzer et al., Reading Digits in Natural Images with Unsupervised Feature Learning, NIPS Workshop "
                 "2011.",
        size={"test": 26032},
        notes="The energy/GReg code uses the whole test split (the KNN code a subset from select_svhn_data.py).",
    ),
    DatasetInfo(
        name="textures", kind="ood", title="Textures (DTD), all 5,640 images of 47 categories", splits=("test",),
        files=(_DTD_ARCHIVE,),
        folders=("dtd/dtd/images", "dtd/images"), transform="resize_crop",
        preprocessing="resize the shorter side to 32 (bilinear, PIL) then center-crop 32x32, as trn.Resize(32), "
                      "trn.CenterCrop(32) in the energy_ood and Greg-OOD test code",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014.", size={"test": 5640},
        notes="Folder <root>/dtd/dtd/images (torchvision.datasets.DTD layout, used for download=True) or "
              "<root>/dtd/images (the tarball extracted into the root, as in the energy/KNN code).",
    ),
    DatasetInfo(
        name="dtd10", kind="ood", title="Textures (DTD, 10 categories), 1,200 images at 32x32", splits=("test",),
        files=(FileInfo("dtd10-32.tar.xz", None,
                        "sha256:6a05aff4ab4f882ec1119299c3ab37246f782db6d179bbde15650633026ff477",
                        "our derived copy: ../shared/data/dtd10-32.{tar.xz,sha256} beside the checkout (an offline "
                        "mirror), or <mirror>/dtd10-32.tar.xz", extract_to=""),
               _DTD_ARCHIVE),
        folders=("dtd10-32",), transform="as_is", derivation=_DTD10_DERIVATION,
        preprocessing="derived from the official DTD archive by the stated transform (derivation); read as stored "
                      "(32x32 PNG), as the Outlier Exposure code prepares Textures for CIFAR models (shorter side to "
                      "32, centre crop)",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014.", size={"test": 1200},
        notes="A SUBSET of Textures: every image of the first 10 of DTD's 47 categories (banded ... crystalline, 120 "
              "each). Name it 'Textures (DTD, 10 categories)' wherever a result uses it; its numbers are not the "
              "papers' Textures column (all 5,640 images). Sources, in order: <root>/dtd10-32, our derived copy "
              "dtd10-32.tar.xz (under the root, in ../shared/data, at the mirrors; sha256 enforced), else the official "
              "dtd-r1.0.1.tar.gz (under the root, at the mirrors, or with download=True its URL; md5 enforced), "
              "derived. A reader's derivation need not be byte-identical to our copy (another JPEG decoder or Pillow "
              "version), so its numbers may move within the seed spread.",
    ),
    DatasetInfo(
        name="places365", kind="ood", title="Places365 test images, a 10,000-image subset", splits=("test",),
        files=(FileInfo("places365/test_256.tar", "http://data.csail.mit.edu/places/places365/test_256.tar",
                        "md5:f532f6ad7b582262a2ec8009075e186b", _TV.format("places365.py"), extract_to="places365"),),
        folders=("places365",), transform="resize_crop",
        preprocessing="resize the shorter side to 32 (bilinear, PIL) then center-crop 32x32 (energy_ood / Greg-OOD "
                      "code)",
        citation="Zhou et al., Places: A 10 Million Image Database for Scene Recognition, TPAMI 2017.",
        size={"test": PLACES365_N},
        notes="Which 10,000: if <root>/places365/places365_test_list.txt exists (the list of the KNN-OOD / CIDER code, "
              "github.com/deeplearning-wisc/knn-ood), its images; else if the folder holds at most 10,000 images (the "
              "codebases' test_subset folder), all of them; else our documented sample: the sorted image paths, "
              f"numpy.random.default_rng({PLACES365_SAMPLE_SEED}).choice(N, 10000, replace=False), kept in sorted "
              "order. "
              "The energy_ood code instead draws 2,000 images per evaluation from its places365 folder.",
    ),
    DatasetInfo(
        name="lsun-c", kind="ood", title="LSUN-C (LSUN crop), 10,000 images of 36x36", splits=("test",),
        files=_LSUN_C_FILES,
        folders=("LSUN", "LSUN_C"), transform="center_crop",
        preprocessing="center-crop 36x36 -> 32x32 (Greg-OOD code, trn.CenterCrop(32); the energy_ood code feeds 36x36)",
        citation="Yu et al., LSUN, arXiv:1506.03365, 2015; " + _ODIN_CITE, size={"test": 10000},
    ),
    DatasetInfo(
        name="lsun-c-36", kind="ood", title="LSUN-C (LSUN crop), 10,000 images as stored, 36x36", splits=("test",),
        files=_LSUN_C_FILES,
        folders=("LSUN", "LSUN_C"), transform="as_is", decode_size=36,
        preprocessing="none: the 36x36 images as stored, as the energy_ood code feeds them (CIFAR/test.py:262-263, "
                      "ToTensor + Normalize only); the networks pool globally, so 36 px is accepted",
        citation="Yu et al., LSUN, arXiv:1506.03365, 2015; " + _ODIN_CITE, size={"test": 10000},
        notes="The same files as lsun-c. Name it in a profile's benchmark.ood (e.g. {lsun-c: lsun-c-36}) with "
              "evaluate.protocol energy-readme to put numbers beside the Energy README's; GReg's detect.py and the "
              "default lsun-c crop the centre 32x32.",
    ),
    DatasetInfo(
        name="lsun-r", kind="ood", title="LSUN-R (LSUN resize), 10,000 images of 32x32", splits=("test",),
        files=(FileInfo("LSUN_resize.tar.gz", "https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1",
                        "md5:278b7b31c8cb7e804a1465a8ce03a2dc",
                        "URL: ODIN README; md5: pytorch-ood and detectors (edadaltocg) source, not recomputed by us",
                        extract_to=""),),
        folders=("LSUN_resize", "LSUN_R"), transform="as_is",
        preprocessing="none (already 32x32; any other size: shorter side to 32 + center crop)",
        citation="Yu et al., LSUN, arXiv:1506.03365, 2015; " + _ODIN_CITE, size={"test": 10000},
    ),
    DatasetInfo(
        name="isun", kind="ood", title="iSUN, 8,925 images of 32x32", splits=("test",),
        files=(FileInfo("iSUN.tar.gz", "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1",
                        "md5:be77b0f2c26fda898afac5f99645ee70",
                        "URL: ODIN README; md5: detectors (edadaltocg) source, one codebase, not recomputed by us",
                        extract_to=""),),
        folders=("iSUN",), transform="as_is",
        preprocessing="none (already 32x32; any other size: shorter side to 32 + center crop)",
        citation="Xu et al., TurkerGaze: Crowdsourcing Saliency with Webcam based Eye Tracking, arXiv:1504.06755, "
                 "2015; " + _ODIN_CITE, size={"test": 8925},
    ),
    DatasetInfo(
        name="300k-random", kind="aux", title="300K random images (Tiny Images subset, 300,000 x 32x32)",
        splits=("train",),
        files=(FileInfo("300K_random_images.npy", "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
                        "md5:64ca64357de98351f28454274a112dc3",
                        "URL: outlier-exposure README (hendrycks); md5: pytorch-ood source, not recomputed by us"),),
        preprocessing="none: the uint8 (300000, 32, 32, 3) array, memory-mapped (only the rows used are read)",
        citation="Hendrycks, Mazeika, Dietterich, Deep Anomaly Detection with Outlier Exposure, ICLR 2019 "
                 "(drawn from 80 Million Tiny Images, Torralba et al. 2008, since withdrawn by its authors).",
        size={"train": 300000},
        notes="The auxiliary outlier set of the Energy-OE and GReg CIFAR experiments. 80M Tiny Images was withdrawn "
              "by its authors; tinyimagenet32 stands in where this file cannot be had.",
    ),
    DatasetInfo(
        name="tinyimagenet32", kind="aux",
        title="TinyImageNet-200 training images re-encoded at 32x32 (100,000; a stand-in auxiliary outlier pool)",
        splits=("train",),
        files=(FileInfo("tinyimagenet32-train.tar.xz", None,
                        "sha256:78b12ee3c29de4a458749a014eb6cefea6b225bd9be339da742f03b9451dab02",
                        "our derived copy: ../shared/data/tinyimagenet32-train.{tar.xz,sha256} beside the checkout (an "
                        "offline mirror), or <mirror>/tinyimagenet32-train.tar.xz", extract_to=""),
               _TINY_ARCHIVE),
        folders=("tinyimagenet32/train",), transform="as_is", derivation=_TINY_DERIVATION,
        preprocessing="derived from the official TinyImageNet-200 archive by the stated transform (derivation); the "
                      "32x32 images (PNG, or JPEG in our copy) decoded once and cached as "
                      "<root>/tinyimagenet32/train-uint8.npy; labels -1",
        citation="Le & Yang, Tiny ImageNet Visual Recognition Challenge, CS231N, 2015 (images from ImageNet, "
                 "Russakovsky et al., IJCV 2015).",
        size={"train": 100000},
        notes="Some of its 200 classes overlap CIFAR's. It stands in for 300K random images / ImageNet-RC where those "
              "cannot be downloaded: say so wherever a result uses it. Sources, in order: <root>/tinyimagenet32/train, "
              "our derived copy tinyimagenet32-train.tar.xz (under the root, in ../shared/data, at the mirrors; "
              "sha256 enforced; its images are 32x32 JPEGs re-encoded from the official ones, filter unrecorded), "
              "else the official tiny-imagenet-200.zip (under the root, at the mirrors, or with download=True its "
              "URL; md5 enforced), derived to PNG. A reader's derivation is not byte-identical to our copy (ours is "
              "a re-encoded JPEG; another JPEG decoder or Pillow version), so its numbers may move within the seed "
              "spread.",
    ),
    DatasetInfo(
        name="imagenet", kind="id", title="ImageNet-1k (ILSVRC-2012), user-provided ImageFolder train/ and val/",
        splits=("train", "val"),
        files=(FileInfo("imagenet", "https://image-net.org/download.php (login; licence terms)", None,
                        "not downloadable automatically"),),
        folders=("imagenet",), resolution="full",
        preprocessing="full resolution; load_folder(name, root, transform) with the caller's transform "
                      "(e.g. Resize(256), CenterCrop(224))",
        citation="Russakovsky et al., ImageNet Large Scale Visual Recognition Challenge, IJCV 2015.",
        size={"train": 1281167, "val": 50000},
        notes="Put (or symlink) the ImageFolder layout at <root>/imagenet/train/<wnid>/*.JPEG and "
              "<root>/imagenet/val/<wnid>/*.JPEG.",
    ),
    *(DatasetInfo(
        name=name, kind="aux", title=title, splits=None,
        files=(FileInfo("imagenet", "https://image-net.org/download.php (login; licence terms)", None,
                        "not downloadable automatically"),),
        resolution="full",
        preprocessing="full resolution; streamed from <root>/imagenet/train/<wnid>/ (ood.benchmark, FolderDataset) "
                      "with the profile's training transform; labels -1",
        citation="Russakovsky et al., ImageNet Large Scale Visual Recognition Challenge, IJCV 2015; the class rule of "
                 "Greg-OOD (github.com/o4lc/Greg-OOD, ood/imagenet_subsets.yaml)",
        notes=f"The ImageNet profile's auxiliary outliers: the classes ood.benchmark.imagenet_aux_classes({name!r}).")
      for name, title in (("imagenet-other", "ImageNet-1k training images of every class outside the ID subset "
                                             "(GReg's ImageNet auxiliary outliers)"),
                          ("imagenet-aux100", "ImageNet-1k training images of the 100 classes of "
                                              "imagenetAuxClassAndIndex.pth (100 <= perm < 200)"))),
    _mos_entry("inaturalist", "iNaturalist", "md5:5be6ea8aa027d7b631916427b32cb335",
               "Van Horn et al., The iNaturalist Species Classification and Detection Dataset, CVPR 2018"),
    _mos_entry("sun", "SUN", "md5:8469c3ada62211477954ec1be53b12d0",
               "Xiao et al., SUN Database: Large-scale Scene Recognition from Abbey to Zoo, CVPR 2010"),
    _mos_entry("places", "Places", "md5:b5cb5eba2754ae2a28beea8718db699a", "Zhou et al., Places, TPAMI 2017"),
    DatasetInfo(
        name="imagenet-textures", kind="ood",
        title="Textures (DTD), all 5,640 images, full resolution (ImageNet profile)",
        splits=None,
        files=(_DTD_ARCHIVE,),
        folders=("dtd/dtd/images", "dtd/images"), resolution="full",
        preprocessing="full resolution; load_folder with the ImageNet test transform",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014.", size={"test": 5640},
    ),
)


#: Environment variable (TESTS ONLY) naming a JSON file {registry file path: checksum} applied at import.
TEST_CHECKSUMS_ENV = "OOD_TEST_CHECKSUMS"


def apply_test_checksums(path=None) -> None:
    """TESTS ONLY: replace, in every entry of ``DATASETS``, the checksum of each file named in the JSON file ``path``
    (default ``$OOD_TEST_CHECKSUMS``; unset or empty: nothing changes) by the one given there. Runs at import, so a
    DVC stage's subprocess sees the same checksums as the test that started it. An unknown path or a malformed
    checksum is a ValueError naming it."""
    path = os.environ.get(TEST_CHECKSUMS_ENV, "") if path is None else str(path)
    if not path:
        return
    with open(path) as f:
        table = json.load(f)
    known = {fi.path for info in DATASETS.values() for fi in info.files}
    for k, v in table.items():
        algo = str(v).split(":", 1)[0]
        if k not in known or algo not in ("md5", "sha256") or ":" not in str(v):
            raise ValueError(f"{TEST_CHECKSUMS_ENV}={path}: entry {k!r}: {v!r} must map a registry file path to "
                             "'md5:<hex>' or 'sha256:<hex>'")
    for name, info in list(DATASETS.items()):
        if any(fi.path in table for fi in info.files):
            files = tuple(dataclasses.replace(fi, checksum=table[fi.path]) if fi.path in table else fi
                          for fi in info.files)
            DATASETS[name] = dataclasses.replace(info, files=files)


apply_test_checksums()


#: Environment variable naming dataset mirrors: entries separated by ``;`` (whitespace around each is stripped).
MIRRORS_ENV = "OOD_MIRRORS"


_PROFILE_MIRRORS: list[str] = []   # a profile's benchmark.mirrors while ood.benchmark loads its sets (profile_mirrors)


@contextlib.contextmanager
def profile_mirrors(mirrors):
    """Within the block, :func:`mirror_list` also looks at ``mirrors`` (a profile's ``benchmark.mirrors``: a list, or
    one ``;``-separated string), after the entries of ``$OOD_MIRRORS``."""
    global _PROFILE_MIRRORS
    before = _PROFILE_MIRRORS
    _PROFILE_MIRRORS = mirror_list(mirrors or [])
    try:
        yield
    finally:
        _PROFILE_MIRRORS = before


def mirror_list(mirrors=None) -> list[str]:
    """The mirrors to look files up at, in order: ``mirrors`` (a list, or one ``;``-separated string) or, when None,
    ``$OOD_MIRRORS`` then the loading profile's ``benchmark.mirrors`` (:func:`profile_mirrors`). A mirror is an
    ``http(s)://`` base URL or a local folder (a path or ``file://`` URL); any other scheme is a ValueError naming
    the entry. ``[]``: no mirrors."""
    if mirrors is None:
        mirrors = [m for m in os.environ.get(MIRRORS_ENV, "").split(";") if m.strip()] + _PROFILE_MIRRORS
    items = mirrors.split(";") if isinstance(mirrors, str) else [str(m) for m in mirrors]
    out = []
    for m in (m.strip() for m in items):
        if not m:
            continue
        scheme = m.split("://", 1)[0].lower() if "://" in m else ""
        if scheme not in ("", "http", "https", "file"):
            raise ValueError(f"mirror {m!r}: a mirror is an http(s):// base URL or a local folder "
                             f"(in ${MIRRORS_ENV}, entries are separated by ';')")
        out.append(m)
    return out


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; ValueError naming the allowed names if there is none."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


def describe(name: str, full: bool = False, mirrors=None) -> str:
    """One line (title; role; source files with checksums) or, with ``full``, every field of the entry and the
    mirrors its files are looked up at first (``mirror_list(mirrors)``; the row is left out when there are none)."""
    info = dataset_info(name)
    if info.files:
        f = info.files[0]
        src = f"<root>/{f.path} from {f.url or f.source} ({f.checksum or 'checksum unverified'})"
        if info.derivation and len(info.files) > 1:
            o = info.files[1]
            src += f", or derived from the official {Path(o.path).name} ({o.url}, {o.checksum})"
    else:
        src = "generated by ood.synthetic, no download"
    line = f"{info.title} [{info.kind}]; {src}"
    if not full:
        return line
    rows = [f"{info.name}: {info.title}", f"  role: {info.kind}",
            f"  splits: {', '.join(info.splits) if info.splits else 'one set (split ignored)'}"]
    if info.size:
        rows.append("  size: " + ", ".join(f"{k} {v:,}" for k, v in info.size.items()))
    for i, f in enumerate(info.files):
        what = ("derived copy" if i == 0 else "official archive") if info.derivation else "file"
        url = f.url or ("no public URL: ours, derived from the official archive below" if info.derivation
                        else "no public URL")
        rows.append(f"  {what}: <root>/{f.path}  from {url}  {f.checksum or 'checksum: unverified'}  [{f.source}]")
    if info.derivation:
        rows.append(f"  derivation (when only the official archive is found): {info.derivation}")
    if info.folders:
        rows.append("  folder: " + " or ".join(f"<root>/{d}" for d in info.folders))
    ms = mirror_list(mirrors) if info.files else []
    if ms:
        src = "given" if mirrors is not None else f"${MIRRORS_ENV}"
        rows.append(f"  mirrors ({src}; each file is looked up first as <mirror>/<file name>, in this order, before "
                    "its URL; the checksum is still enforced): " + ", ".join(ms))
    rows += [f"  preprocessing: {info.preprocessing}", f"  cite: {info.citation}"]
    if info.notes:
        rows.append(f"  notes: {info.notes}")
    return "\n".join(rows)


def check_split(info: DatasetInfo, split: str) -> str:
    """``split`` if the set has it (sets with a single split accept any); else ValueError."""
    if info.splits is None:
        return split
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} for dataset {info.name!r}; allowed: {', '.join(info.splits)}")
    return split
