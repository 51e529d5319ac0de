"""benchmarks/ovs_lifting.py under a protocol: the committed ovs_v1 is refused before any run (its
overrides predate the config schema), the committed ovs_v2 plans its encoder stage and ten rooms
without running anything, bad protocols are refused with file and field, and a hand-made protocol
on tiny rooms runs end to end (the encoder stage, then four room processes), its tables match the
rooms' records and a second call reuses them all."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import ovs_lifting as O  # noqa: E402
from _protocol import load_protocol  # noqa: E402

from pcseg.engine.config import load_config  # noqa: E402

TINY = ["train.epochs=1", "data.kwargs.steps_per_epoch=5", "data.kwargs.batch_rays=64", "method.num_samples=16",
        "data.kwargs.num_views=3", "data.kwargs.held_out=1", "data.kwargs.num_points=5000", "data.kwargs.height=16",
        "data.kwargs.width=24", "model.resolution=16",
        # the LSeg-style encoder against the hash text space (configs/ovs/lseg_hash.yaml), trained by the stage
        "method.image_encoder.work_dir=${out}/lseg", "method.text_encoder.name=HashTextEncoder",
        "method.text_encoder.dim=64"]
ENCODER = ["data.kwargs.root=${out}/rooms", "train.epochs=1", "data.batch_size=4", "data.val_batch_size=4",
           "eval.period=1", "train.warmup_iters=0"]
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
encoder:
  views: ${{out}}/rooms
  views_per_room: 3
  val: {{generator_seeds: [902]}}
  config: configs/ovs/lseg_hash.yaml
  work_dir: ${{out}}/lseg
  overrides: {json.dumps(ENCODER)}
common_overrides: {json.dumps(TINY)}
ovs:
  config: configs/ovs/synthetic_room_lseg.yaml
  rows: [per_view_2d, lifted, rendered]
  places: [held_out_views, points]
metric:
  report: test mIoU
  paired: [lifted - per_view_2d, rendered - per_view_2d]
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


def test_committed_ovs_v2_plans_the_encoder_stage_then_ten_rooms_and_writes_nothing(tmp_path: Path) -> None:
    """The shipped recipe's views (tools/ovs.py --write-views: rooms 1000-1023 train, 1024-1025 val, 16
    views, the rooms' 48 x 64 at 75°), lseg_minilm.yaml trained on them under --out, and 500-iteration fits
    of synthetic_room_lseg.yaml on rooms 500-504 then 400-404 whose image encoder is that training run."""
    out = tmp_path / "out"
    protocol = load_protocol(REPO / "benchmarks/protocols/ovs_v2.yaml", O.SECTIONS, stages=False)
    encoder, runs, spec, paired = O.plan(protocol, out)
    assert (encoder.room_seed, encoder.rooms, encoder.val_rooms, encoder.views_per_room) == (1000, 24, 2, 16)
    assert dict(encoder.scene) == {"num_points": 60000, "height": 48, "width": 64, "fov_deg": 75.0}
    assert encoder.config == REPO / "configs/ovs/lseg_minilm.yaml" and encoder.work_dir == out / "lseg_minilm"
    assert load_config(encoder.config, encoder.overrides).data.kwargs["root"] == str(out / "ovs_rooms")
    assert [(r.stage, r.seed, r.overrides[-1]) for r in runs] == [
        (split, s, f"data.kwargs.seed={base + s}") for split, base in (("test", 500), ("val", 400)) for s in range(5)]
    for run in runs:
        cfg = load_config(run.config, run.overrides)
        assert cfg.train.epochs * cfg.data.kwargs["steps_per_epoch"] == 500 and cfg.seed == run.seed
        assert dict(cfg.method["image_encoder"]) == {"name": "LSegImageEncoder", "work_dir": str(out / "lseg_minilm")}
    assert spec["rows"] == ["per_view_2d", "lifted", "rendered"]
    assert paired == (("lifted", "per_view_2d"), ("rendered", "per_view_2d"))
    assert not out.exists()


def test_views_written_with_other_settings_stop_the_experiment(tmp_path: Path) -> None:
    """An --out whose encoder views were written with other settings (a changed protocol) is refused."""
    out = tmp_path / "out"
    (out / "rooms").mkdir(parents=True)
    (out / "rooms" / ".generated_encoder_views.json").write_text(json.dumps({"room_seed": 900, "rooms": 2}))
    with pytest.raises(SystemExit) as err:
        O.main(["--protocol", str(_write(tmp_path)), "--out", str(out)])
    assert str(err.value).startswith(f"error: {out / 'rooms' / '.generated_encoder_views.json'}: encoder_views: "
                                     f"written with") and "use another --out" in str(err.value)
    assert not (out / "lseg").exists() and not (out / "test").exists()


@pytest.mark.parametrize("edit, message", [
    (("rows: [per_view_2d, lifted, rendered]", "rows: [per_view_2d, fused]"),
     "ovs.rows: expected distinct names among per_view_2d, lifted, rendered, got ['per_view_2d', 'fused']"),
    (("places: [held_out_views, points]", "places: [points, points]"), "ovs.places: expected distinct names"),
    (("  places: [held_out_views, points]\n", ""), "ovs.places: expected a list, got None"),
    (("paired: [lifted - per_view_2d", "paired: [lifted - fused"),
     "metric.paired[0]: expected rows of every downstream task, got 'lifted - fused'"),
    (("report: test mIoU", "checkpoint: model_last.pth"), "metric: unknown key(s) checkpoint"),
    (("val: {generator_seeds: [40, 41]}", "val: {generator_seeds: [40]}"),
     "data.splits.val.generator_seeds: expected one room per seed (2), got 1"),
    (("test: {generator_seeds: [50, 51]}", "test: {generator_seeds: [50, 40]}"), "generator seed 40 is also used"),
    (("generator: synthetic_room", "generator: scannet"), "data.generator: expected 'synthetic_room'"),
    (("config: configs/ovs/synthetic_room_lseg.yaml", "config: configs/ovs/nope.yaml"),
     "ovs.config: expected a shipped config file"),
    # the encoder stage
    (("encoder:\n", "encoderz:\n"), "<top level>: unknown key(s) encoderz"),
    (("  views_per_room: 3\n", ""), "encoder.views_per_room: expected a int, got None"),
    (("  views_per_room: 3\n", "  views_per_room: 3\n  rooms: 2\n"), "encoder: unknown key(s) rooms"),
    (("  views_per_room: 3", "  views_per_room: 0"), "encoder.views_per_room: expected an int >= 1, got 0"),
    (("val: {generator_seeds: [902]}", "val: {generator_seeds: [50]}"),
     "encoder.val.generator_seeds: generator seed 50 is also used by data.splits.test.generator_seeds"),
    (("val: {generator_seeds: [902]}", "val: {generator_seeds: [903]}"),
     "encoder.val.generator_seeds: expected consecutive generator seeds from 902"),
    (("train: {generator_seeds: [900, 901]}", "train: {generator_seeds: [900, 903]}"),
     "data.splits.train.generator_seeds: expected consecutive generator seeds from 900"),
    (("views: ${out}/rooms", "views: /elsewhere/rooms"), "encoder.views: expected a folder under ${out}"),
    (("work_dir: ${out}/lseg", "work_dir: work_dirs/lseg"), "encoder.work_dir: expected a folder under ${out}"),
    (("config: configs/ovs/lseg_hash.yaml", "config: configs/ovs/lseg_nope.yaml"),
     "encoder.config: expected a shipped config file"),
    (('overrides: ["data.kwargs.root', 'overrides: ["train.epochz=1", "data.kwargs.root'),
     "encoder.overrides: expected overrides that configs/ovs/lseg_hash.yaml accepts"),
    (('overrides: ["data.kwargs.root', 'overrides: [5, "data.kwargs.root'),
     "encoder.overrides[0]: expected a dotted key=value override, got 5"),
    (('overrides: ["data.kwargs.root=${out}/rooms', 'overrides: ["data.kwargs.root=${out}/other'),
     "encoder.overrides: expected an LSeg model trained on the ImageFolder data.kwargs.root="),
    (("method.image_encoder.work_dir=${out}/lseg", "method.image_encoder.work_dir=${out}/lseg2"),
     "common_overrides: expected the rooms' method.image_encoder to be the LSegImageEncoder of encoder.work_dir"),
    (("config: configs/ovs/lseg_hash.yaml", "config: configs/ovs/lseg_minilm.yaml"),
     "encoder.config: expected the rooms' text encoder {'name': 'HashTextEncoder', 'dim': 64} as model.text_encoder"),
    (("config: configs/ovs/synthetic_room_lseg.yaml", "config: configs/ovs/synthetic_room.yaml"),
     "common_overrides: expected the rooms' method.image_encoder to be the LSegImageEncoder"),
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
    # the encoder stage: rooms 900, 901 to its train split, 902 to its val split, 3 views each, then trained
    assert sorted(p.name for p in (out / "rooms" / "train" / "images").iterdir()) == [
        f"r{room}_v{v:03d}.png" for room in (900, 901) for v in range(3)]
    assert sorted(p.name for p in (out / "rooms" / "val" / "images").iterdir()) == [f"r902_v{v:03d}.png"
                                                                                   for v in range(3)]
    assert load_config(out / "lseg" / "config.yaml").data.kwargs["root"] == str(out / "rooms")
    assert summary["encoder"]["seconds"] > 0 and 0 <= summary["encoder"]["val_miou"] <= 1
    assert sorted(summary["runs_started"]) == sorted(f"{split}/-/fit/seed{s}" for split in ("test", "val")
                                                     for s in (3, 7))
    rooms = summary["rooms"]
    # seeds[i] renders the room of generator_seeds[i] of its split, with run seed seeds[i]
    assert {(split, s, r["room"], r["seed"]) for split, by_seed in rooms.items() for s, r in by_seed.items()} == {
        ("test", "3", 50, 3), ("test", "7", 51, 7), ("val", "3", 40, 3), ("val", "7", 41, 7)}
    rows = ("per_view_2d", "lifted", "rendered")
    metric = {("held_out_views", "per_view_2d"): "view_2d", ("held_out_views", "lifted"): "view_lifted",
              ("held_out_views", "rendered"): "view_rendered", ("points", "per_view_2d"): "point_2d",
              ("points", "lifted"): "point_lifted", ("points", "rendered"): "point_rendered"}
    test = {s: rooms["test"][s]["metrics"] for s in ("3", "7")}
    assert len({round(test["3"][k], 6) for k in metric.values()}) > 2  # the mapping below can be told apart
    assert all(test[s]["view_rendered"] == test[s]["view_lifted"] for s in test)  # held-out views are rendered
    lines = summary["table"].splitlines()
    for place in ("held_out_views", "points"):
        block = lines[lines.index(f"**{place}**"):]
        values = {row: [100 * test[s][metric[place, row]] for s in ("3", "7")] for row in rows}
        for i, row in enumerate(rows):
            assert block[4 + i] == f"| {row} | {_cell(values[row])} |"
        for i, row in enumerate(("lifted", "rendered")):
            diff = [a - b for a, b in zip(values[row], values["per_view_2d"])]
            assert block[7 + i] == f"| {row} − per_view_2d, paired | {_cell(diff)} |"
        for row in rows:
            cell = summary["results"][place]["-"][row]["7"]
            assert cell["val_miou"] == rooms["val"]["7"]["metrics"][metric[place, row]]
    coverage = [100 * test[s]["point_coverage"] for s in ("3", "7")]
    assert 0 < min(coverage) and max(coverage) <= 100
    assert lines[-1] == f"point coverage (%), test rooms: {_cell(coverage)}"
    assert json.loads((out / "results.json").read_text())["table"] == summary["table"]

    (out / "test" / "seed7" / O.RESULT_FILE).unlink()  # one room lost its result: only it runs again
    trained = (out / "lseg" / "model_last.pth").stat().st_mtime_ns
    again = O.main(argv)
    assert again["runs_started"] == ["test/-/fit/seed7"]
    assert (out / "lseg" / "model_last.pth").stat().st_mtime_ns == trained  # the encoder is reused
    assert again["table"] == summary["table"]  # the same fit (resumed from its finished checkpoint), same numbers
