"""DeepPCB (printed-circuit defects, MIT licence, github tangsanli5201/DeepPCB) in the MVTec layout.

    git clone https://github.com/tangsanli5201/DeepPCB   # or any bare git directory of it
    python benchmarks/prepare_deeppcb.py --repo DeepPCB [--out benchmarks/data/deeppcb]

DeepPCB has 1,500 aligned pairs of 640x640 binarised PCB images: a defect-free template (`*_temp.jpg`)
and a tested image (`*_test.jpg`) with every defect boxed (`x1 y1 x2 y2 type`: open, short, mousebite,
spur, copper, pin-hole). Every tested image has at least one defect, so the goods are the templates.
The repository's own split is kept: its 1,000 trainval pairs give train/good (templates of 900 pairs)
and val (the other 100 pairs: template as good, tested image as defect, seeded, seed 0); its 500 test
pairs give test/good (templates) and test/defect (tested images) with the boxes filled as masks.
Each pair shows a different board region, so a good-only model sees no repeated "station" view: the set
is the harness's held-out check, never used to choose settings.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prepare import DATA, export_tree, split_indices, write_png

SEED = 0


def box_mask(annotation: str, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    boxes = [line.replace(",", " ").split() for line in annotation.splitlines() if line.strip()]
    if not boxes:
        raise SystemExit("a tested image without defect boxes")
    for box in boxes:
        x1, y1, x2, y2 = (int(float(v)) for v in box[:4])
        mask[max(0, y1) : min(height, y2 + 1), max(0, x1) : min(width, x2 + 1)] = 255
    return mask


def pairs(listing: str) -> list[tuple[str, str]]:
    """(image stem path, annotation path) per line of trainval.txt / test.txt."""
    out = []
    for line in listing.splitlines():
        if line.strip():
            image, annotation = line.split()
            out.append((image.removesuffix(".jpg"), annotation))
    return out


def prepare(repo: Path, out: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        commit = export_tree(repo, ["PCBData"], src)
        root = src / "PCBData"
        trainval = pairs((root / "trainval.txt").read_text())
        test = pairs((root / "test.txt").read_text())
        if out.exists():
            shutil.rmtree(out)
        train_i, val_i = split_indices(len(trainval), (0.9, 0.1), SEED)
        counts = {"train/good": 0, "val/good": 0, "val/defect": 0, "test/good": 0, "test/defect": 0}
        for i in train_i:
            _copy(root, trainval[i][0], "temp", out / "train" / "good")
            counts["train/good"] += 1
        for split, chosen in (("val", [trainval[i] for i in val_i]), ("test", test)):
            for stem, annotation in chosen:
                _copy(root, stem, "temp", out / split / "good")
                image = _copy(root, stem, "test", out / split / "defect")
                counts[f"{split}/good"] += 1
                counts[f"{split}/defect"] += 1
                if split == "test":
                    mask = box_mask((root / annotation).read_text(), image.shape[0], image.shape[1])
                    write_png(out / "ground_truth" / "defect" / f"{Path(stem).name}_mask.png", mask)
    (out / "SOURCE.txt").write_text(
        f"DeepPCB, github tangsanli5201/DeepPCB commit {commit}, MIT licence. "
        "Written by benchmarks/prepare_deeppcb.py.\n" + "".join(f"{k}: {v}\n" for k, v in counts.items())
    )
    return counts


def _copy(root: Path, stem: str, kind: str, folder: Path) -> np.ndarray:
    path = root / f"{stem}_{kind}.jpg"
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise SystemExit(f"{path}: not a readable image")
    write_png(folder / f"{Path(stem).name}.png", image)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="a clone or bare git directory of DeepPCB")
    parser.add_argument("--out", type=Path, default=DATA / "deeppcb")
    args = parser.parse_args()
    for key, value in prepare(args.repo, args.out).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
