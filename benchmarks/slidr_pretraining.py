"""SLidR pre-training experiment under a fixed protocol: random init vs point-level distillation vs SLidR.

    python benchmarks/slidr_pretraining.py --protocol benchmarks/protocols/slidr_v1.yaml \
        --out work_dirs/slidr_v1 [--jobs 2]

Every setting is in the protocol file (see its header and ``benchmarks/_protocol.py``). Steps, each
reused when its output exists (a stopped run continues from its last checkpoint):

1. per split (train / val / test) a synthetic SemanticKITTI street of its own generator seed
   (``make_semantickitti``: LiDAR sweeps, camera images, calibration);
2. the teacher's unlabelled street images (``write_image_folder``, its own generator seed), then the
   label-free 2D teacher, built once before any pre-training run from the pre-training stage's
   ``method.teacher`` (``pcseg.methods.slidr.build_teacher`` trains and writes its checkpoint; every
   pre-training run then loads that file);
3. the protocol's budgets on the train split, one per seed;
4. the runs: pre-training per row and seed (``tools/pretrain_slidr.py``), then each downstream task's
   runs (``tools/train.py``) as soon as their backbone exists, ``--jobs`` at a time with one thread
   each; each downstream model of the last epoch evaluated on the test street (``test.json``);
5. ``OUT/results.json`` and the markdown tables of test mIoU, mean ± sample std over seeds, with the
   paired differences.
"""
from __future__ import annotations

from pathlib import Path

import torch
from _protocol import Protocol, data_settings, expand, fill, generate_once, run_experiment

from pcseg.utils.errors import InputError


def teacher_images(protocol: Protocol, out: Path) -> None:
    """The ``teacher.images`` folder of unlabelled street images (step 2, first half)."""
    from pcseg.data.synthetic import write_image_folder

    spec = protocol.sections.get("teacher", {}).get("images")
    expected = {"generator": "pcseg.data.synthetic.write_image_folder", "out": str, "count": int,
                "generator_seed": int, "width": int}
    if not isinstance(spec, dict) or set(spec) != set(expected):
        raise InputError(f"{protocol.path}: teacher.images: expected the keys {', '.join(expected)}, got {spec!r}")
    if spec["generator"] != expected["generator"]:
        raise InputError(f"{protocol.path}: teacher.images.generator: expected {expected['generator']!r} (what this "
                         f"script runs), got {spec['generator']!r}")
    root = Path(fill(protocol, "teacher.images.out", spec["out"], out=out))
    generate_once(root, "teacher_images", {**spec, "out": str(root)},
                  lambda: write_image_folder(root, spec["count"], seed=spec["generator_seed"], width=spec["width"]))


def build_teacher_once(protocol: Protocol, out: Path) -> None:
    """The frozen 2D teacher of every pre-training run, trained here (step 2, second half).

    Every pre-training run must name the same ``method.teacher``; InputError otherwise.
    """
    from pcseg.engine.config import load_config, thaw
    from pcseg.methods.slidr import build_teacher

    specs = {run.key: thaw(load_config(run.config, run.overrides).method.get("teacher"))
             for run in expand(protocol, out) if run.stage == "pretrain"}
    distinct = {repr(spec) for spec in specs.values()}
    if len(distinct) != 1:
        raise InputError(f"{protocol.path}: pretrain: expected one method.teacher for every pre-training run "
                         f"(one frozen network, as SLidR's MoCo checkpoint), got {len(distinct)} different ones")
    torch.set_num_threads(protocol.jobs)
    build_teacher(next(iter(specs.values())))


def prepare(protocol: Protocol, out: Path):
    """Steps 1-2; returns the train split's reader (the budgets are drawn on it)."""
    from pcseg.data import SemanticKITTIReader
    from pcseg.data.synthetic import make_semantickitti

    data, splits = data_settings(protocol, out, {"generator": str, "frames": int, "azimuth_steps": int,
                                                 "image_scale": float},
                                 {"root": str, "sequence": str, "generator_seed": int},
                                 fixed={"generator": "pcseg.data.synthetic.make_semantickitti"})
    for name, spec in splits.items():
        generate_once(Path(spec["root"]), name, {**data, **spec},
                      lambda: make_semantickitti(spec["root"], data["frames"], seed=spec["generator_seed"],
                                                 sequences=(spec["sequence"],), azimuth_steps=data["azimuth_steps"],
                                                 image_scale=data["image_scale"]))
    teacher_images(protocol, out)
    if any(stage.name == "pretrain" for stage in protocol.stages):
        build_teacher_once(protocol, out)
    return SemanticKITTIReader(splits["train"]["root"], "train", sequences=[splits["train"]["sequence"]])


if __name__ == "__main__":
    run_experiment(__doc__, prepare, extra_sections=("teacher",))
