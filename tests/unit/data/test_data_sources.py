"""load_dataset dispatch: "elpv", CSV manifests, MVTec folders, and a clear error for anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellsight.data import DatasetError, load_dataset


def test_elpv_by_name() -> None:
    assert len(load_dataset("elpv")) == 2624


def test_csv_manifest(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "list.CSV").write_text("path,label\na.png,ok\n")
    dataset = load_dataset(tmp_path / "list.CSV")
    assert dataset.name == "list" and dataset.labels == [0]


def test_mvtec_folder_given_as_string(tmp_path: Path) -> None:
    good = tmp_path / "bottle" / "train" / "good"
    good.mkdir(parents=True)
    (good / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    dataset = load_dataset(str(tmp_path / "bottle"))
    assert dataset.name == "bottle" and dataset.labels == [0]


def test_missing_path_lists_what_is_accepted(tmp_path: Path) -> None:
    assert_lists_accepted(tmp_path / "absent", "absent: no such file or folder")


def test_plain_folder_lists_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert_lists_accepted(tmp_path / "plain", "plain: folder is not in MVTec AD layout")


def test_other_file_type_lists_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    assert_lists_accepted(tmp_path / "x.json", "x.json: cannot load a data set from a .json file")


def assert_lists_accepted(source: Path, fragment: str) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset(source)
    message = str(caught.value)
    assert fragment in message
    assert "'elpv'" in message and "CSV manifest" in message and "MVTec" in message
