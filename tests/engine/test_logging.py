import json

import pytest

from pcseg.engine.logging import EventWriter


def test_jsonl_records_and_disabled_writer(tmp_path):
    writer = EventWriter(tmp_path, tensorboard=False)
    writer.write("train", {"epoch": 1, "step": 10, "loss": 0.5})
    writer.write("val", {"epoch": 1, "step": 10, "miou": 0.25, "iou": {"wall": 0.5, "chair": None}})
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines == [{"type": "train", "epoch": 1, "step": 10, "loss": 0.5},
                     {"type": "val", "epoch": 1, "step": 10, "miou": 0.25, "iou": {"wall": 0.5, "chair": None}}]
    other = tmp_path / "rank1"
    other.mkdir()
    EventWriter(other, enabled=False).write("train", {"step": 1, "loss": 1.0})
    assert list(other.iterdir()) == []


def test_tensorboard_scalars_when_available(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = EventWriter(tmp_path)
    writer.write("val", {"epoch": 1, "step": 7, "miou": 0.25, "iou": {"wall": 0.5, "chair": None}})
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["val/iou/wall", "val/miou"]
    assert [(e.step, e.value) for e in events.Scalars("val/miou")] == [(7, 0.25)]
