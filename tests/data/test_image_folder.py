import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecanet.data.image_folder import load_image_folder

COLOURS = {"apple": (200, 30, 30), "grass": (20, 180, 40), "sky": (40, 90, 250)}


def make_folder(root: Path, per_class: int = 5, size: tuple[int, int] = (20, 14)) -> None:
    """One solid-colour PNG per sample (shade varies with the sample number), one folder per class."""
    for name, (red, green, blue) in COLOURS.items():
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            Image.new("RGB", size, (red, green, blue - index)).save(root / name / f"{index}.png")


def colours(dataset) -> list[tuple[int, int, int]]:
    return [tuple(int(value) for value in image[:, 0, 0]) for image in dataset.images]


def test_images_are_decoded_resized_and_labelled(tmp_path: Path) -> None:
    make_folder(tmp_path)
    train, info = load_image_folder(tmp_path, train=True, augment=False, image_size=8)
    val, _ = load_image_folder(tmp_path, train=False, augment=False, image_size=8)
    assert info.classes == ("apple", "grass", "sky") and (info.in_chans, info.image_size) == (3, 8)
    assert train.images.shape[1:] == (3, 8, 8) and len(train) + len(val) == 15
    for dataset in (train, val):
        for (red, green, blue), label in zip(colours(dataset), dataset.labels.tolist(), strict=True):
            expected = COLOURS[info.classes[label]]
            assert (red, green) == expected[:2] and expected[2] - 4 <= blue <= expected[2]
        # Solid images stay solid through resizing.
        assert all(np.ptp(image.numpy(), axis=(1, 2)).max() == 0 for image in dataset.images)


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=4)
    (tmp_path / "apple" / "broken.png").write_bytes(b"this is not a PNG file")
    buffer = io.BytesIO()
    Image.new("RGB", (30, 30), (1, 2, 3)).save(buffer, format="JPEG")
    (tmp_path / "sky" / "truncated.jpg").write_bytes(buffer.getvalue()[:40])
    (tmp_path / "sky" / "README.txt").write_text("not an image, not counted")
    with pytest.warns(UserWarning, match=r"skipped \d unreadable image\(s\) of \d+ in") as record:
        train, _ = load_image_folder(tmp_path, train=True, augment=False, image_size=8, val_fraction=0.01)
        val, _ = load_image_folder(tmp_path, train=False, augment=False, image_size=8, val_fraction=0.01)
    messages = " ".join(str(warning.message) for warning in record)
    assert "broken.png" in messages and "truncated.jpg" in messages
    skipped = sum(int(str(warning.message).split()[1]) for warning in record)
    assert skipped == 2 and len(train) + len(val) == 12


def test_seeded_split_is_stratified_disjoint_and_reproducible(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=10)

    def split(seed: int) -> tuple[set, set]:
        parts = [
            load_image_folder(tmp_path, train=flag, augment=False, image_size=8, seed=seed)[0] for flag in (True, False)
        ]
        return tuple(set(zip(colours(part), part.labels.tolist(), strict=True)) for part in parts)

    train, val = split(seed=0)
    assert not train & val and len(train | val) == 30
    assert sorted(label for _, label in val) == [0, 1, 2]  # 10% of each class
    assert split(seed=0) == (train, val)
    assert split(seed=1) != (train, val)


def test_separate_validation_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=3)
    (tmp_path / "val" / "sky").mkdir(parents=True)
    Image.new("RGB", (9, 9), (0, 0, 255)).save(tmp_path / "val" / "sky" / "one.png")
    train, info = load_image_folder(tmp_path, train=True, augment=False, image_size=8)
    val, _ = load_image_folder(tmp_path, train=False, augment=False, image_size=8)
    assert len(train) == 9 and info.classes == ("apple", "grass", "sky")
    assert val.labels.tolist() == [2] and colours(val) == [(0, 0, 255)]  # labels follow the training folder


def test_a_lone_train_folder_is_split_like_a_pool(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=10)
    train, info = load_image_folder(tmp_path, train=True, augment=False, image_size=8)
    val, _ = load_image_folder(tmp_path, train=False, augment=False, image_size=8)
    assert info.classes == ("apple", "grass", "sky") and (len(train), len(val)) == (27, 3)


def test_validation_class_unknown_to_training_is_refused(tmp_path: Path) -> None:
    make_folder(tmp_path / "train", per_class=1)
    (tmp_path / "test" / "moon").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has class folders \['moon'\] that the training folder lacks"):
        load_image_folder(tmp_path, train=False, augment=False)


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "message"),
    [
        (None, {"data_dir": None}, ValueError, "data_dir is required for 'imagefolder'"),
        (None, {"data_dir": "no/such/folder"}, FileNotFoundError, "data_dir='no/such/folder' is not a directory"),
        ("empty", {}, FileNotFoundError, "no class subfolders in data_dir="),
        ("no-images", {}, ValueError, r"class folders \['cats'\] in '.*' hold no images \(.bmp, .*\): add images"),
        ("one-class", {}, ValueError, r"has one class folder, 'apple': a classifier needs two classes or more"),
        ("one-each", {"train": False}, ValueError, r"validation split of '.*' is empty: too few images per class"),
        ("empty-val", {"train": False}, ValueError, r"validation split of '.*val' is empty: its class folders hold no"),
        ("empty", {"val_fraction": 1.0}, ValueError, r"val_fraction must be between 0 and 1 \(exclusive\), got 1.0"),
    ],
)
def test_bad_folders_and_arguments_are_named(tmp_path: Path, setup, kwargs: dict, error: type, message: str) -> None:
    if setup == "no-images":
        make_folder(tmp_path, per_class=2)
        (tmp_path / "cats").mkdir()
        (tmp_path / "cats" / "notes.txt").write_text("no images here")
    elif setup == "one-class":
        (tmp_path / "apple").mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / "apple" / "0.png")
    elif setup == "one-each":
        make_folder(tmp_path, per_class=1)
    elif setup == "empty-val":
        make_folder(tmp_path / "train", per_class=2)
        (tmp_path / "val" / "apple").mkdir(parents=True)
    arguments = {"data_dir": tmp_path, "train": True, **kwargs}
    with pytest.raises(error, match=message):
        load_image_folder(arguments.pop("data_dir"), augment=False, **arguments)


def test_hidden_folders_and_files_are_neither_classes_nor_images(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=4)
    for hidden in [".ipynb_checkpoints/0-checkpoint.png", "apple/.ipynb_checkpoints/0-checkpoint.png", "sky/.0.png"]:
        (tmp_path / hidden).parent.mkdir(exist_ok=True)
        Image.new("RGB", (20, 14)).save(tmp_path / hidden)
    data, info = load_image_folder(tmp_path, train=True, augment=False, image_size=8, val_fraction=0.25)
    assert info.classes == ("apple", "grass", "sky") and len(data) == 9
