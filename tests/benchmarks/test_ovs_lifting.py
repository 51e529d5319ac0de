"""benchmarks/ovs_lifting.py under a protocol: the committed ovs_v1 is refused before any run (its
overrides predate the config schema), bad protocols are refused with file and field, and a hand-made
protocol on tiny rooms runs end to end (four room processes), its tables match the rooms' records
and a second call reuses them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import ovs_lifting as O  # noqa: E402

TINY = ["train.epochs=1", "data.kwargs.steps_per_epoch=5", "data.kwargs.batch_rays=64", "method.num_samples=16",
        "data.kwargs.num_views=3", "data.kwargs.held_out=1", "data.kwargs.num_points=5000", "data.kwargs.height=16",
        "data.kwargs.width=24", "model.resolution=16"]
PROTOCOL = f"""\
name: ovs_toy_v1
seeds: [3, 7]
jobs: 2
data:
  generator: synthetic_room
  splits:
    train: {{generator_seeds: [900, 901]}}
    val: {{generator_seeds: [40, 41]}}
    test: {{generator_seeds: [50, 51]}}
common_overrides: [{", ".join(TINY)}]
ovs:
  config: configs/ovs/synthetic_room.yaml
  rows: [per_view_2d, lifted]
  places: [held_out_views, points]
metric:
  report: test mIoU
  paired: [lifted - per_view_2d]
"""


def _write(tmp_path: Path, text: str = PROTOCOL) -> Path:
    path = tmp_path / "ovs_toy_v1.yaml"
    path.write_text(text)
    return path


def test_committed_ovs_v1_is_refused_before_any_run(tmp_path: Path) -> None:
    """ovs_v1.yaml's fit.* / features.* overrides are the schema before issue 18 (the config has neither)."""
    protocol = REPO / "benchmarks/protocols/ovs_v1.yaml"
    with pytest.raises(SystemExit) as err:
        O.main(["--protocol", str(protocol), "--out", str(tmp_path / "out")])
    assert str(err.value).startswith(f"error: {protocol}: common_overrides: expected overrides that "
                                     f"configs/ovs/synthetic_room_lseg.yaml accepts")
    assert "fit unknown" in str(err.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (("rows: [per_view_2d, lifted]", "rows: [per_view_2d, fused]"),
     "ovs.rows: expected distinct names among per_view_2d, lifted, got ['per_view_2d', 'fused']"),
    (("places: [held_out_views, points]", "places: [points, points]"), "ovs.places: expected distinct names"),
    (("  places: [held_out_views, points]\n", ""), "ovs.places: expected a list, got None"),
    (("paired: [lifted - per_view_2d]", "paired: [lifted - fused]"),
     "metric.paired[0]: expected rows of every downstream task, got 'lifted - fused'"),
    (("report: test mIoU", "checkpoint: model_last.pth"), "metric: unknown key(s) checkpoint"),
    (("val: {generator_seeds: [40, 41]}", "val: {generator_seeds: [40]}"),
     "data.splits.val.generator_seeds: expected one room per seed (2), got 1"),
    (("test: {generator_seeds: [50, 51]}", "test: {generator_seeds: [50, 40]}"), "generator seed 40 is also used"),
    (("generator: synthetic_room", "generator: scannet"), "data.generator: expected 'synthetic_room'"),
    (("config: configs/ovs/synthetic_room.yaml", "config: configs/ovs/nope.yaml"),
     "ovs.config: expected a shipped config file"),
    (("common_overrides: [", "common_overrides: [data.kwargs.seed=5, "),
     "common_overrides[0]: expected none of seed, data.kwargs.seed"),
    (("common_overrides: [", "common_overrides: [train.epochz=2, "), "common_overrides: expected overrides that"),
])
def test_bad_protocols_are_refused_with_file_and_field(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    assert edit[0] in PROTOCOL
    path = _write(tmp_path, PROTOCOL.replace(edit[0], edit[1], 1))
    with pytest.raises(SystemExit) as err:
        O.main(["--protocol", str(path), "--out", str(tmp_path / "out")])
    assert str(err.value).startswith(f"error: {path}: ") and message in str(err.value)
    assert not (tmp_path / "out").exists()


def _cell(values: list[float]) -> str:
    """The table's cell, computed here: mean ± sample std (values), one decimal."""
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f} ({', '.join(f'{v:.1f}' for v in values)})"


def test_toy_protocol_end_to_end_tables_match_the_rooms_and_are_reused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--protocol", str(_write(tmp_path)), "--out", str(out)]
    summary = O.main(argv)
    assert sorted(summary["runs_started"]) == sorted(f"{split}/-/fit/seed{s}" for split in ("test", "val")
                                                     for s in (3, 7))
    rooms = summary["rooms"]
    # seeds[i] renders the room of generator_seeds[i] of its split, with run seed seeds[i]
    assert {(split, s, r["room"], r["seed"]) for split, by_seed in rooms.items() for s, r in by_seed.items()} == {
        ("test", "3", 50, 3), ("test", "7", 51, 7), ("val", "3", 40, 3), ("val", "7", 41, 7)}
    metric = {("held_out_views", "per_view_2d"): "view_2d", ("held_out_views", "lifted"): "view_lifted",
              ("points", "per_view_2d"): "point_2d", ("points", "lifted"): "point_lifted"}
    test = {s: rooms["test"][s]["metrics"] for s in ("3", "7")}
    assert len({round(test["3"][k], 6) for k in metric.values()}) > 1  # the mapping below can be told apart
    lines = summary["table"].splitlines()
    for place in ("held_out_views", "points"):
        block = lines[lines.index(f"**{place}**"):]
        values = {row: [100 * test[s][metric[place, row]] for s in ("3", "7")] for row in ("per_view_2d", "lifted")}
        assert block[4] == f"| per_view_2d | {_cell(values['per_view_2d'])} |"
        assert block[5] == f"| lifted | {_cell(values['lifted'])} |"
        diff = [a - b for a, b in zip(values["lifted"], values["per_view_2d"])]
        assert block[6] == f"| lifted − per_view_2d, paired | {_cell(diff)} |"
        for row in ("per_view_2d", "lifted"):
            cell = summary["results"][place]["-"][row]["7"]
            assert cell["val_miou"] == rooms["val"]["7"]["metrics"][metric[place, row]]
    coverage = [100 * test[s]["point_coverage"] for s in ("3", "7")]
    assert 0 < min(coverage) and max(coverage) <= 100
    assert lines[-1] == f"point coverage (%), test rooms: {_cell(coverage)}"
    assert json.loads((out / "results.json").read_text())["table"] == summary["table"]

    (out / "test" / "seed7" / O.RESULT_FILE).unlink()  # one room lost its result: only it runs again
    again = O.main(argv)
    assert again["runs_started"] == ["test/-/fit/seed7"]
    assert again["table"] == summary["table"]  # the same fit (resumed from its finished checkpoint), same numbers
