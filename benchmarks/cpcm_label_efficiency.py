"""CPCM label-efficiency experiment under a fixed protocol: supervised vs consistency-only vs CPCM.

    python benchmarks/cpcm_label_efficiency.py --protocol benchmarks/protocols/cpcm_v1.yaml \
        --out work_dirs/cpcm_v1 [--jobs 2]

Every setting is in the protocol file (see its header and ``benchmarks/_protocol.py``). Steps, each
reused when its output exists (a stopped training continues from its last checkpoint):

1. per split (train / val / test) synthetic rooms of its own generator seed in the ScanNet v2 raw
   layout, one folder per split, with the split's ``scannetv2_<split>.txt``;
2. the protocol's budgets on the train split, one per seed;
3. ``tools/train.py`` on the shipped configs for every (row, budget, seed), ``--jobs`` at a time with
   one thread each, into ``OUT/runs/<row>/<budget>/seed<seed>``; then the model of the last epoch
   evaluated on the test rooms (``test.json``);
4. ``OUT/results.json`` and a markdown table of test mIoU, mean ± sample std over seeds, with the
   paired differences.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from _protocol import Protocol, data_settings, generate_once, run_experiment


def write_split(root: Path, split: str, scenes: int, generator_seed: int, num_points: int) -> None:
    """Rooms ``scene0000_00``… of ``generate_room(default_rng([generator_seed, i]), num_points)`` under
    ``root/scans`` and ``root/scannetv2_<split>.txt`` naming them all."""
    from pcseg.data.synthetic import generate_room, write_scannet_scene

    names = [f"scene{i:04d}_00" for i in range(scenes)]
    for i, name in enumerate(names):
        write_scannet_scene(generate_room(np.random.default_rng([generator_seed, i]), num_points), root, name)
    (root / f"scannetv2_{split}.txt").write_text("".join(f"{n}\n" for n in names))


def prepare(protocol: Protocol, out: Path):
    """Step 1; returns the train split's reader (the budgets are drawn on it)."""
    from pcseg.data import ScanNetReader

    data, splits = data_settings(protocol, out, {"generator": str, "writer": str, "num_points": int},
                                 {"root": str, "split": str, "scenes": int, "generator_seed": int},
                                 fixed={"generator": "pcseg.data.synthetic.generate_room",
                                        "writer": "pcseg.data.synthetic.write_scannet_scene"})
    for name, spec in splits.items():
        root = Path(spec["root"])
        generate_once(root, name, {**spec, "num_points": data["num_points"]},
                      lambda: write_split(root, spec["split"], spec["scenes"], spec["generator_seed"],
                                          data["num_points"]))
    return ScanNetReader(splits["train"]["root"], "train")


if __name__ == "__main__":
    run_experiment(__doc__, prepare)
