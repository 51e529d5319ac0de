import numpy as np
import pytest

from pcseg.data.formats._common import IGNORE_INDEX, drop_nonfinite, remap_labels


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
