"""Folders in the MVTec AD layout, the de-facto standard for anomaly-detection data sets.

    root/train/good/*            good training images (label 0)
    root/train/<class>/*         optional defective training images (label 1), for supervised detectors
    root/val/<class>/*           optional validation images, e.g. for threshold calibration
    root/test/good/*, root/test/<class>/*
    root/ground_truth/<class>/   optional masks of test images: "<stem>_mask.png" or "<stem>.png", and of
                                 train defects whose stem no test image of the class has (e.g. train_000)

Folder "good" (any letter case) is label 0; every other folder is label 1 with the folder name as
defect class. Mistakes that would silently corrupt metrics (a mask named so it matches no image,
images dropped directly into train/) are errors, not warnings.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cellsight.data.dataset import GOOD, SPLITS, Dataset, Item
from cellsight.data.errors import DatasetError
from cellsight.data.images import IMAGE_SUFFIXES, list_images

GROUND_TRUTH = "ground_truth"
MASK_SUFFIX = "_mask"


def is_mvtec_layout(root: Path | str) -> bool:
    """True when `root` has train/good/ or test/: enough to try load_mvtec."""
    folder = Path(root)
    return _find_good(folder / "train") is not None or (folder / "test").is_dir()


def load_mvtec(root: Path | str, name: str | None = None) -> Dataset:
    """Load an MVTec-AD-style folder; the data set is named after the folder unless `name` is given.

    Masks belong to test images first, as in MVTec AD: train and val folders reuse the same file names
    (000.png, 001.png ...), so a mask whose stem a test image has is that test image's. A mask that
    matches no test image may name a train defect of the same class (the synthetic writer names them
    train_000.png ...); one that matches neither is an error. Good images have no mask; metrics treat
    a missing mask as all-zero.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: folder not found" if not folder.exists() else f"{folder}: not a folder"
        )
    try:
        return _load_folder(folder, name)
    except OSError as exc:  # a folder or file that cannot be listed (permissions, a vanished drive)
        raise DatasetError(f"{exc.filename or folder}: cannot read ({exc.strerror or exc})") from exc


def _load_folder(folder: Path, name: str | None) -> Dataset:
    if not is_mvtec_layout(folder):
        categories = sorted(d.name for d in folder.iterdir() if d.is_dir() and is_mvtec_layout(d))
        if categories:
            raise DatasetError(
                f"{folder}: holds several MVTec categories ({', '.join(categories[:5])}"
                f"{', ...' if len(categories) > 5 else ''}); load one of them, e.g. {folder / categories[0]}"
            )
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:10]
        raise DatasetError(
            f"{folder}: not an MVTec AD layout: expected {folder / 'train' / 'good'}/ and/or "
            f"{folder / 'test'}/<class>/ (found: {', '.join(found) or 'nothing'})"
        )
    test_classes = _class_dirs(folder / "test") if (folder / "test").is_dir() else []
    train_classes = _class_dirs(folder / "train") if (folder / "train").is_dir() else []
    masks = _masks(folder, test_classes, train_classes)
    items: list[Item] = []
    for split in SPLITS:
        split_dir = folder / split
        if split_dir.is_dir():
            items.extend(_split_items(split_dir, split, masks if split in ("test", "train") else {}))
    if not items:
        raise DatasetError(
            f"{folder}: no images in train/, val/ or test/ class folders "
            f"(accepted: {', '.join(IMAGE_SUFFIXES)})"
        )
    return Dataset(name or folder.name, tuple(items))


def _find_good(split_dir: Path) -> Path | None:
    if not split_dir.is_dir():
        return None
    return next((d for d in _class_dirs(split_dir) if d.name.lower() == GOOD), None)


def _class_dirs(split_dir: Path) -> list[Path]:
    """Class folders, "good" first then alphabetical, so item order is the same on every machine."""
    dirs = [d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return sorted(dirs, key=lambda d: (d.name.lower() != GOOD, d.name))


def _split_items(split_dir: Path, split: str, masks: dict[Path, Path]) -> list[Item]:
    stray = sorted(p for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if stray:
        raise DatasetError(
            f"{split_dir}: {len(stray)} image(s) directly in {split}/ (e.g. {stray[0].name}); "
            f"put them in {split}/good/ or {split}/<defect class>/"
        )
    items: list[Item] = []
    for class_dir in _class_dirs(split_dir):
        good = class_dir.name.lower() == GOOD
        for path in list_images(class_dir):
            items.append(
                Item(
                    path=path,
                    label=0 if good else 1,
                    defect_class=GOOD if good else class_dir.name,
                    split=split,
                    mask_path=masks.get(path),
                )
            )
    return items


def _masks(root: Path, test_classes: list[Path], train_classes: list[Path]) -> dict[Path, Path]:
    """Map each test image (then train defect) to its mask; every mask file must belong to exactly one image."""
    gt_root = root / GROUND_TRUTH
    if not gt_root.is_dir():
        return {}
    tests = {d.name: d for d in test_classes}
    trains = {d.name: d for d in train_classes if d.name.lower() != GOOD}
    masks: dict[Path, Path] = {}
    for gt_dir in _class_dirs(gt_root):
        if gt_dir.name not in tests and gt_dir.name not in trains:
            raise DatasetError(
                f"{gt_dir}: masks for class {gt_dir.name!r}, "
                f"but {root / 'test' / gt_dir.name}/ does not exist"
            )
        images = list_images(tests[gt_dir.name]) if gt_dir.name in tests else []
        test_stems = {image.stem for image in images}
        if gt_dir.name in trains:  # train defects whose stem no test image takes
            images += [p for p in list_images(trains[gt_dir.name]) if p.stem not in test_stems]
        masks.update(_match_masks(gt_dir, images))
    return masks


def _match_masks(gt_dir: Path, images: list[Path]) -> dict[Path, Path]:
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for mask in list_images(gt_dir):
        by_stem[mask.stem.removesuffix(MASK_SUFFIX)].append(mask)
    matched: dict[Path, Path] = {}
    for image in images:
        candidates = by_stem.pop(image.stem, [])
        if len(candidates) > 1:
            names = ", ".join(c.name for c in candidates)
            raise DatasetError(f"{gt_dir}: several masks for {image.name} ({names}); keep one")
        if candidates:
            matched[image] = candidates[0]
    if by_stem:
        orphan = sorted(m for found in by_stem.values() for m in found)[0]
        raise DatasetError(
            f"{orphan}: mask matches no image in {gt_dir.parent.parent / 'test' / gt_dir.name}/ "
            f"(a mask for <stem>.png must be named <stem>{MASK_SUFFIX}.png or <stem>.png)"
        )
    return matched
