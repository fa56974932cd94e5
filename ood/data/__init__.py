"""Datasets by name, checksummed files, and the device-side data path (uint8 arrays, batched crops and flips).

Its modules, in dependency order (each imports only modules above it, by public name):

    registry.py   DATASETS: one DatasetInfo per set (files, checksums, preprocessing, citation); describe(name)
    fetching.py   data roots, checksums, DataMissingError / ChecksumError, downloads, mirrors, archives, shared copies
    arrays.py     ArrayDataset, augment_batch (crop + flip on the device), Loader
    derive.py     derived sets (dtd10, TinyImageNet-32): our copy, else derive_set from the official archive
    folders.py    image folders: 32x32 sets decoded once, FolderDataset (streamed), load_folder / locate_folder
    readers.py    load(name, split) -> ArrayDataset: synthetic, CIFAR-10/100, SVHN, 300K (image folders via folders.py)

The names the rest of the project uses are re-exported here; each module's docstring says what it holds.
``DATA_ROOT`` and ``SHARED_DATA`` are read from ``ood.data.fetching`` when used: set them there, not here.
"""
from ood.data.arrays import ArrayDataset, Loader, augment_batch
from ood.data.fetching import (
    DATA_ROOT,
    SHARED_DATA,
    ChecksumError,
    DataMissingError,
    UnsafeArchiveError,
    file_checksum,
)
from ood.data.folders import FolderDataset, folder_dataset, load_folder, locate_folder, take_rows
from ood.data.readers import load
from ood.data.registry import DATASETS, SYNTHETIC_SIZES, DatasetInfo, FileInfo, describe, mirror_list

__all__ = [
    "DATA_ROOT", "SHARED_DATA", "SYNTHETIC_SIZES", "ArrayDataset", "FolderDataset", "folder_dataset", "locate_folder",
    "Loader", "augment_batch", "take_rows", "load", "load_folder", "describe", "DATASETS", "DatasetInfo", "FileInfo",
    "DataMissingError", "ChecksumError", "UnsafeArchiveError", "file_checksum", "mirror_list",
]
