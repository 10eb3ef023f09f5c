"""Data layer: robust image reading and the loaders that turn folders, CSVs and ELPV into Datasets."""

from cellsight.data.dataset import GOOD, SPLITS, Dataset, Item, concat
from cellsight.data.elpv import load_elpv
from cellsight.data.errors import DatasetError
from cellsight.data.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageReadError,
    LazyImages,
    decode_image,
    list_images,
    read_image,
    to_float01,
    to_gray,
    to_rgb,
)
from cellsight.data.manifest import load_manifest
from cellsight.data.mvtec import load_mvtec
from cellsight.data.sources import load_dataset

__all__ = [
    "GOOD",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "SPLITS",
    "Dataset",
    "DatasetError",
    "ImageReadError",
    "Item",
    "LazyImages",
    "concat",
    "decode_image",
    "list_images",
    "load_dataset",
    "load_elpv",
    "load_manifest",
    "load_mvtec",
    "read_image",
    "to_float01",
    "to_gray",
    "to_rgb",
]
