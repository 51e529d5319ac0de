"""Synthetic street images in the image-folder layout, read back with ImageFolderReader."""
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcseg.data.datasets import ImageFolderReader
from pcseg.data.formats import IGNORE_INDEX, SEMANTICKITTI_CLASS_NAMES
from pcseg.data.synthetic import render_street_image, write_image_folder
from pcseg.data.synthetic.write_images import IGNORE_LABEL

REPO = Path(__file__).resolve().parents[2]
ID = {name: i for i, name in enumerate(SEMANTICKITTI_CLASS_NAMES)}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("image2d")
    return root, write_image_folder(root, num_images=8, seed=0)


def test_layout_shapes_and_reader_round_trip(images):
    root, written = images
    assert {split: sorted(names) for split, names in written.items()} == {
        "train": [f"street{i:04d}" for i in range(6)], "val": ["street0006", "street0007"]}
    for split, names in written.items():
        reader = ImageFolderReader(root, split, num_classes=19)
        assert reader.scenes == sorted(names)
        for name, oracle in names.items():
            with Image.open(root / split / "images" / f"{name}.png") as im:
                assert (im.mode, im.size) == ("RGB", (160, 48))
            with Image.open(root / split / "labels" / f"{name}.png") as im:
                assert (im.mode, im.size) == ("L", (160, 48))
            assert oracle.image.shape == (48, 160, 3) and oracle.label.shape == (48, 160)
            scene = reader.load(name)
            np.testing.assert_array_equal(scene["color"].reshape(48, 160, 3), oracle.image)
            expected = np.where(oracle.label == IGNORE_LABEL, IGNORE_INDEX, oracle.label.astype(np.int64))
            np.testing.assert_array_equal(scene["segment"].reshape(48, 160), expected)


def test_street_classes_are_present(images):
    _, written = images
    labels = np.stack([img.label for split in written.values() for img in split.values()])
    assert set(np.unique(labels)) <= set(range(19)) | {IGNORE_LABEL}
    per_image = [set(np.unique(lab)) for lab in labels]
    for name in ("road", "building", "vegetation"):
        assert sum(ID[name] in present for present in per_image) >= 6, name
    for name in ("car", "sidewalk", "pole", "trunk", "parking", "terrain", "fence"):
        assert any(ID[name] in present for present in per_image), name
    assert all(IGNORE_LABEL in present for present in per_image)  # the sky


def test_labels_agree_with_what_the_image_shows(images):
    _, written = images
    pixels = np.concatenate([img.image.reshape(-1, 3) for split in written.values() for img in split.values()])
    labels = np.concatenate([img.label.ravel() for split in written.values() for img in split.values()])
    mean = {c: pixels[labels == c].astype(float).mean(0) for c in (IGNORE_LABEL, ID["road"], ID["vegetation"])}
    red, green, blue = mean[IGNORE_LABEL]
    assert blue > red + 25 and blue > green  # sky: blue
    red, green, blue = mean[ID["vegetation"]]
    assert green > red + 15 and green > blue + 15  # leaves: green
    road = mean[ID["road"]]
    assert road.max() - road.min() < 15 and road.mean() < 110  # asphalt: dark grey
    sky_rows = np.stack([img.label for img in written["train"].values()]) == IGNORE_LABEL
    assert sky_rows[:, :8].mean() > 0.3 and sky_rows[:, -8:].mean() == 0  # sky above, ground below


def test_each_image_depends_only_on_seed_and_index(images):
    _, written = images
    again = render_street_image(np.random.default_rng([0, 6]))
    np.testing.assert_array_equal(again.image, written["val"]["street0006"].image)
    np.testing.assert_array_equal(again.label, written["val"]["street0006"].label)
    wide = render_street_image(np.random.default_rng([0, 6]), width=320)
    assert wide.image.shape == (97, 320, 3) and wide.label.shape == (97, 320)


def test_make_synthetic_images_cli(tmp_path, capsys):
    main = runpy.run_path(str(REPO / "tools" / "make_synthetic.py"))["main"]
    main(["--kind", "images", "--out", str(tmp_path), "--scenes", "2", "--seed", "1", "--width", "64"])
    assert "wrote 2 images" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "val" / "labels").iterdir()] == ["street0001.png"]
    with Image.open(tmp_path / "train" / "images" / "street0000.png") as im:
        assert im.size == (64, 19)
