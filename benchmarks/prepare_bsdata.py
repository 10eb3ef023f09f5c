"""BSData (ball-screw drive pitting, CC BY-SA 4.0, github 2Obe/BSData) in the MVTec layout for the harness.

    git clone https://github.com/2Obe/BSData   # or any bare git directory of it
    python benchmarks/prepare_bsdata.py --repo BSData [--out benchmarks/data/bsdata]

Which images are good: the repository labels only defective images. `image_data.json` lists all 1,104
images; 394 carry an `annotations` file (labelme polygons, every one with at least one "Pitting" shape),
710 carry none. An image without an annotation file is taken as good. All 710 unannotated images are of
BSD type 2, so the set is type 2 only (325 pitted images): one part type, as one station sees it.

Split (seeded, seed 0): goods 55% train, 15% val, 30% test; pitted images 40% val, 60% test. The val
split (goods and pitting) is for calibration and tuning; test is only for the table. Images are copied
as they are (JPEG decoded, written as PNG, 1130x460 or 1540x645); test masks are the filled polygons.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prepare import DATA, export_tree, split_indices, write_png

SEED = 0


def polygon_mask(annotation: dict[str, object], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    shapes = annotation.get("shapes")
    if not isinstance(shapes, list) or not shapes:
        raise SystemExit("an annotation file without shapes: cannot tell where the pitting is")
    for shape in shapes:
        points = np.round(np.asarray(shape["points"], np.float64)).astype(np.int32)
        cv2.fillPoly(mask, [points], 255)
    return mask


def prepare(repo: Path, out: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        commit = export_tree(repo, ["data", "label", "image_data.json"], src)
        entries = json.loads((src / "image_data.json").read_text())["images"]
        type2 = [e for e in entries if e["type"] == 2]
        goods = sorted(e["filename"] for e in type2 if not e["annotations"])
        pitted = sorted((e["filename"], e["annotations"]) for e in type2 if e["annotations"])
        if out.exists():
            shutil.rmtree(out)
        counts: dict[str, int] = {}
        train, val, test = split_indices(len(goods), (0.55, 0.15, 0.30), SEED)
        for split, part in (("train", train), ("val", val), ("test", test)):
            for i in part:
                image = _read(src / "data" / goods[i])
                write_png(out / split / "good" / f"{Path(goods[i]).stem}.png", image)
            counts[f"{split}/good"] = len(part)
        val_d, test_d = split_indices(len(pitted), (0.4, 0.6), SEED + 1)
        for split, part in (("val", val_d), ("test", test_d)):
            for i in part:
                name, label = pitted[i]
                image = _read(src / "data" / name)
                write_png(out / split / "pitting" / f"{Path(name).stem}.png", image)
                if split == "test":
                    annotation = json.loads((src / "label" / label).read_text())
                    mask = polygon_mask(annotation, image.shape[0], image.shape[1])
                    write_png(out / "ground_truth" / "pitting" / f"{Path(name).stem}_mask.png", mask)
            counts[f"{split}/pitting"] = len(part)
    (out / "SOURCE.txt").write_text(
        f"BSData, github 2Obe/BSData commit {commit}, CC BY-SA 4.0. Written by benchmarks/prepare_bsdata.py.\n"
        + "".join(f"{k}: {v}\n" for k, v in counts.items())
    )
    return counts


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: not a readable image")
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="a clone or bare git directory of 2Obe/BSData")
    parser.add_argument("--out", type=Path, default=DATA / "bsdata")
    args = parser.parse_args()
    for key, value in prepare(args.repo, args.out).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
