"""load_manifest on small CSVs: label spellings, defaults, dialects, and errors with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellsight.data.errors import DatasetError
from cellsight.data.manifest import load_manifest


def make_images(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n")  # the loader checks existence only; reading is lazy


def write_csv(root: Path, text: str, name: str = "manifest.csv", encoding: str = "utf-8") -> Path:
    path = root / name
    path.write_text(text, encoding=encoding)
    return path


def test_labels_splits_masks_and_meta(tmp_path: Path) -> None:
    make_images(tmp_path, "img/a.png", "img/b.png", "img/c.png", "img/d.png", "img/e.png", "masks/b.png")
    absolute = tmp_path / "img" / "e.png"
    csv_path = write_csv(
        tmp_path,
        "path,label,split,mask,line,shift\n"
        "img/a.png,OK,train,,L2,night\n"
        "img/b.png,crack,test,masks/b.png,L2,day\n"
        "img/c.png,0,val,,L3,day\n"
        "img/d.png,NG,test,,L3,night\n"
        f"{absolute},bad,,,L1,day\n",
    )
    dataset = load_manifest(csv_path)
    assert dataset.name == "manifest"
    assert [(i.label, i.defect_class, i.split) for i in dataset] == [
        (0, "good", "train"),
        (1, "crack", "test"),
        (0, "good", "val"),
        (1, "defect", "test"),
        (1, "defect", "train"),  # empty split cell -> default
    ]
    assert dataset.items[0].path == tmp_path / "img" / "a.png"
    assert dataset.items[4].path == absolute
    assert dataset.items[1].mask_path == tmp_path / "masks" / "b.png"
    assert dataset.items[0].mask_path is None
    assert dataset.items[0].meta == {"line": "L2", "shift": "night"}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("good", (0, "good")),
        ("Good", (0, "good")),
        ("ok", (0, "good")),
        ("0", (0, "good")),
        ("defect", (1, "defect")),
        ("ng", (1, "defect")),
        ("NOK", (1, "defect")),
        ("bad", (1, "defect")),
        ("1", (1, "defect")),
        ("finger_interruption", (1, "finger_interruption")),
        ("micro-crack", (1, "micro-crack")),
    ],
)
def test_label_spellings(tmp_path: Path, label: str, expected: tuple[int, str]) -> None:
    make_images(tmp_path, "a.png")
    item = load_manifest(write_csv(tmp_path, f"path,label\na.png,{label}\n")).items[0]
    assert (item.label, item.defect_class) == expected
    assert item.split == "train"  # no split column -> default


def test_default_split_is_adjustable(tmp_path: Path) -> None:
    make_images(tmp_path, "a.png")
    dataset = load_manifest(write_csv(tmp_path, "path,label\na.png,ok\n"), default_split="test")
    assert dataset.items[0].split == "test"


def test_defect_class_column(tmp_path: Path) -> None:
    make_images(tmp_path, "a.png", "b.png", "c.png")
    csv_path = write_csv(
        tmp_path, "path,label,defect_class\na.png,ng,crack\nb.png,good,good\nc.png,dent,dent\n"
    )
    assert [(i.label, i.defect_class) for i in load_manifest(csv_path)] == [
        (1, "crack"),
        (0, "good"),
        (1, "dent"),
    ]


@pytest.mark.parametrize(("label", "defect_class"), [("good", "crack"), ("ng", "good"), ("dent", "crack")])
def test_contradicting_defect_class(tmp_path: Path, label: str, defect_class: str) -> None:
    make_images(tmp_path, "a.png")
    csv_path = write_csv(tmp_path, f"path,label,defect_class\na.png,{label},{defect_class}\n")
    with pytest.raises(DatasetError, match=r"manifest\.csv line 2: label .* contradicts defect_class"):
        load_manifest(csv_path)


def test_semicolon_excel_export_with_bom(tmp_path: Path) -> None:
    make_images(tmp_path, "a.png", "b.png")
    csv_path = write_csv(
        tmp_path, "Path;Label;Split\r\na.png;ok;train\r\nb.png;ng;test\r\n", encoding="utf-8-sig"
    )
    assert [(i.label, i.split) for i in load_manifest(csv_path)] == [(0, "train"), (1, "test")]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    make_images(tmp_path, "a.png", "b.png")
    csv_path = write_csv(tmp_path, "path,label\na.png,ok\n\n\nb.png,ok\n,,\n\nb.png,maybe\n")
    with pytest.raises(DatasetError, match=r"manifest\.csv line 8: unknown label 'maybe'"):
        load_manifest(csv_path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.png,maybe", r"line 3: unknown label 'maybe'"),
        ("a.png,?", r"line 3: unknown label '\?'"),
        ("a.png,0.5", r"line 3: unknown label '0\.5'"),
        ("a.png,", r"line 3: empty label"),
        ("missing.png,ok", r"line 3: image .*missing\.png: file not found"),
        ("sub,ok", r"line 3: image .*sub: is a folder"),
        (",ok", r"line 3: empty image path"),
        ("a.png,ok,extra", r"line 3: 3 fields but the header has 2"),
        ("b.png,ok", r"line 3: .*b\.png is already listed on line 2"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    make_images(tmp_path, "a.png", "b.png")
    (tmp_path / "sub").mkdir()
    csv_path = write_csv(tmp_path, f"path,label\nb.png,ok\n{row}\n", name="line4.csv")
    with pytest.raises(DatasetError, match=r"line4\.csv " + message):
        load_manifest(csv_path)


def test_bad_split_and_missing_mask(tmp_path: Path) -> None:
    make_images(tmp_path, "a.png")
    with pytest.raises(DatasetError, match=r"line 2: unknown split 'training'"):
        load_manifest(write_csv(tmp_path, "path,label,split\na.png,ok,training\n"))
    with pytest.raises(DatasetError, match=r"line 2: mask .*m\.png: file not found"):
        load_manifest(write_csv(tmp_path, "path,label,mask\na.png,ng,m.png\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty manifest"),
        ("path,label\n", "lists no images"),
        ("file,label\na.png,ok\n", "line 1: missing column 'path'"),
        ("path,status\na.png,ok\n", "line 1: missing column 'label'"),
        ("path,label,Label\na.png,ok,ok\n", "line 1: column 'label' appears more than once"),
    ],
)
def test_bad_header(tmp_path: Path, text: str, message: str) -> None:
    make_images(tmp_path, "a.png")
    with pytest.raises(DatasetError) as caught:
        load_manifest(write_csv(tmp_path, text))
    assert "manifest.csv" in str(caught.value)
    assert message in str(caught.value)


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope\.csv: manifest not found"):
        load_manifest(tmp_path / "nope.csv")
    latin1 = write_csv(tmp_path, "path,label\nZelle_ä.png,ok\n", name="latin.csv", encoding="latin-1")
    with pytest.raises(DatasetError, match=r"latin\.csv: not UTF-8"):
        load_manifest(latin1)
