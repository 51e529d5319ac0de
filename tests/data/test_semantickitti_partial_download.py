"""SemanticKITTI training on a download holding one sequence, with the override README documents.

The shipped config names the official splits (train 00-07, 09, 10; val 08); on a root holding only
``sequences/00`` it must stop with the sequences on disk named, and run once both splits are pointed
at 00 from the command line.
"""
import json
import runpy
from pathlib import Path

import pytest
import yaml

from miou_oracle import checkpoint_val_miou
from pcseg.data.synthetic import make_semantickitti

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "semantickitti" / "supervised.yaml")
ONE_SEQUENCE = ["data.train.kwargs.sequences=[00]", "data.val.kwargs.sequences=[00]"]  # as in README


@pytest.fixture(scope="module")
def one_sequence_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti_00_only")
    make_semantickitti(root, num_frames=2, seed=3, sequences=("00",), azimuth_steps=256, image_scale=0.15)
    assert sorted(p.name for p in (root / "sequences").iterdir()) == ["00"]
    return root


def _tiny(root: Path, work: Path) -> list[str]:
    """The shipped config on ``root`` with a schedule small enough for a test (not part of the override)."""
    return ["--config", CONFIG, "--work-dir", str(work), f"data.kwargs.root={root}", "data.kwargs.voxel_size=0.4",
            "data.num_workers=0", "data.batch_size=1", "model.name=Res16UNet14A", "train.epochs=1",
            "train.log_period=1", "eval.period=1"]


def test_the_official_val_split_is_refused_naming_what_is_on_disk(one_sequence_root, tmp_path):
    train = runpy.run_path(str(REPO / "tools" / "train.py"))["main"]
    work = tmp_path / "work"
    with pytest.raises(SystemExit, match=r"^error: .*sequences: expected <seq>/velodyne/ for 01, 02, 03, 04, 05, 06, "
                                         r"07, 09, 10 \(split 'train'\), not found; on disk: 00$"):
        train(_tiny(one_sequence_root, work))
    with pytest.raises(SystemExit, match=r"^error: .*sequences: expected <seq>/velodyne/ for 08 \(split 'val'\), "
                                         r"not found; on disk: 00$"):
        train(_tiny(one_sequence_root, work) + ONE_SEQUENCE[:1])
    assert not (work / "model_last.pth").exists() and not (work / "config.yaml").exists()


def test_training_on_one_sequence_with_the_documented_override(one_sequence_root, tmp_path):
    train = runpy.run_path(str(REPO / "tools" / "train.py"))["main"]
    work = tmp_path / "work"
    train(_tiny(one_sequence_root, work) + ONE_SEQUENCE)
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "train", "val"]  # 2 scans of 00, batch 1; then val on 00
    # the logged mIoU is that of the saved last model, rerun on sequence 00 and scored in numpy
    assert records[-1]["miou"] == pytest.approx(checkpoint_val_miou(work), abs=1e-12)
    saved = yaml.safe_load((work / "config.yaml").read_text())["data"]
    # YAML reads [00] as [0]; the reader zero-pads it back to sequence 00
    assert saved["train"]["kwargs"] == {"sequences": [0]} and saved["val"]["kwargs"] == {"sequences": [0]}
