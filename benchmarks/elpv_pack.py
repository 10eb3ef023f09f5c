"""Carry the ELPV train cells to a lent GPU machine: pack them here, unpack them there.

The device tool carries at most 64 MiB and the package's PNGs take 92 MB; the 1,970 train cells as
lossless WebP take 57 MB (pixels checked equal when packing). The pack goes into a folder that git
ignores and is never committed (the images are CC BY-NC-SA: loaded from the package, not copied into
the repository). Unpacking writes PNGs in the package's layout (labels.csv + images/), which
`load_elpv(data_dir, splits=("train",))` reads; this script needs only OpenCV and cellsight's data layer.

    PYTHONPATH=src .venv/bin/python benchmarks/elpv_pack.py pack --out .devpack/elpv
    PYTHONPATH=src .venv/bin/python benchmarks/elpv_pack.py pack --split test --out .devpack/elpv-test
    PYTHONPATH=src python3 benchmarks/elpv_pack.py unpack --pack .devpack/elpv --out .devdata/elpv   # GPU
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

from cellsight.data import load_dataset
from cellsight.data.elpv import elpv_data_dir


def pack(out: Path, split: str = "train") -> None:
    """One split's cells as lossless WebP (pixels verified) + the package's labels.csv."""
    train = load_dataset("elpv").select(split=split)
    (out / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(elpv_data_dir() / "labels.csv", out / "labels.csv")
    total = 0
    for item in train:
        image = _read(item.path)
        ok, encoded = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
        decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        if not ok or decoded is None or not np.array_equal(_gray(decoded), image):
            raise SystemExit(f"{item.path}: lossless WebP round trip changed the pixels")
        (out / "images" / (item.path.stem + ".webp")).write_bytes(encoded.tobytes())
        total += encoded.size
    print(f"packed {len(train)} {split} cells, {total / 1e6:.1f} MB, into {out}")


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _read(path: Path) -> np.ndarray:
    """An ELPV cell as 8-bit gray; a file OpenCV cannot read stops the run, naming it."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"{path}: cannot be read as an image")
    return _gray(image)


def unpack(pack_dir: Path, out: Path) -> None:
    """The packed cells back to 8-bit gray PNG under out/images, labels.csv beside them."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    shutil.copy(pack_dir / "labels.csv", out / "labels.csv")
    for path in sorted((pack_dir / "images").glob("*.webp")):
        image = _read(path)
        cv2.imwrite(str(out / "images" / (path.stem + ".png")), image)
    print(f"unpacked {len(list((out / 'images').glob('*.png')))} cells into {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p_pack = sub.add_parser("pack")
    p_pack.add_argument("--out", type=Path, required=True)
    p_pack.add_argument("--split", choices=("train", "test"), default="train",
                        help="test: the 654 test cells (19 MB), for the GPU's CPU-vs-GPU agreement check")
    p_unpack = sub.add_parser("unpack")
    p_unpack.add_argument("--pack", type=Path, required=True)
    p_unpack.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "pack":
        pack(args.out, args.split)
    else:
        unpack(args.pack, args.out)


if __name__ == "__main__":
    main()
