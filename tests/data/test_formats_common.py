import numpy as np
import pytest

from pcseg.data.formats._common import IGNORE_INDEX, SceneReader, drop_nonfinite, read_split_file, remap_labels
from pcseg.utils.errors import InputError


def test_remap_labels_maps_known_and_warns_with_count_for_unknown():
    raw = np.array([0, 1, 2, 7, 1, 300, -4])
    with pytest.warns(UserWarning, match=r"f\.bin: field 'label': 3 points have unknown class ids \[-4, 7, 300\]"):
        segment, n_unknown = remap_labels(raw, {0: IGNORE_INDEX, 1: 0, 2: 1}, "f.bin", "label")
    assert segment.tolist() == [IGNORE_INDEX, 0, 1, IGNORE_INDEX, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert n_unknown == 3


def test_drop_nonfinite_drops_rows_of_every_point_array_and_warns():
    scene = {
        "coord": np.array([[0, 0, 0], [np.nan, 0, 0], [1, np.inf, 0], [2, 2, 2]], np.float32),
        "segment": np.arange(4),
        "name": "s",
    }
    with pytest.warns(UserWarning, match="s.ply: dropped 2 of 4 points with non-finite coordinates"):
        assert drop_nonfinite(scene, "s.ply") == 2
    assert scene["segment"].tolist() == [0, 3]
    assert scene["coord"].shape == (2, 3)


def test_read_split_file_strips_utf8_bom_and_crlf(tmp_path):
    path = tmp_path / "scannetv2_train.txt"
    path.write_bytes(b"\xef\xbb\xbfscene0000_00\r\n\r\nscene0001_01\r\n")
    assert read_split_file(path) == ["scene0000_00", "scene0001_01"]
    path.write_bytes(b"scene0000_00\nscene\xff\n")
    with pytest.raises(InputError, match=r"scannetv2_train\.txt: expected utf-8 text, got byte 0xff at offset 18"):
        read_split_file(path)


class _ListedReader(SceneReader):
    """Scenes from ``<root>/<split>.txt``; scene ``s``'s source is ``<root>/s.bin``."""

    def __init__(self, root, split):
        super().__init__(root, split)
        self.scenes = read_split_file(self.root / f"{split}.txt")
        self.check_sources(self.root / f"{split}.txt")

    def _source(self, name):
        return str(self.root / f"{name}.bin")


def test_scenes_listed_but_missing_on_disk_fail_when_the_reader_is_built(tmp_path):
    names = [f"s{i}" for i in range(9)]
    (tmp_path / "train.txt").write_text("\n".join(names) + "\n")
    for name in ("s0", "s4"):
        (tmp_path / f"{name}.bin").write_bytes(b"")
    with pytest.raises(InputError) as caught:
        _ListedReader(tmp_path, "train")
    assert str(caught.value) == (f"{tmp_path / 'train.txt'}: 7 of the 9 scenes listed are not on disk: "
                                 f"s1, s2, s3, s5, s6 and 2 more (expected e.g. {tmp_path / 's1.bin'})")
    for name in names:
        (tmp_path / f"{name}.bin").write_bytes(b"")
    assert _ListedReader(tmp_path, "train").scenes == names


def test_unknown_split_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="_ListedReader: split 'training' unknown; known: train, val, test"):
        _ListedReader(tmp_path, "training")
