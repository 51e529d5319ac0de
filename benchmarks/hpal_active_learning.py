"""HPAL active-learning experiment under a fixed protocol: random vs plain margin vs HPAL and its ablations.

    python benchmarks/hpal_active_learning.py --protocol benchmarks/protocols/hpal_v1.yaml \
        --out work_dirs/hpal_v1 [--jobs 2]

Every setting is in the protocol file (see its header and ``benchmarks/_protocol.py``), the
active-learning ones in the config's ``active:`` section through the protocol's overrides. Steps,
each reused when its output exists (an interrupted run continues round by round):

1. per split (train / val / test) synthetic rooms of its own generator seed in the S3DIS raw layout:
   train in ``Area_<area>`` of the train folder, val in the held-out ``Area_5`` beside it, test in
   ``Area_5`` of its own folder;
2. ``tools/active_learn.py --resume`` for every (row, seed), ``--jobs`` at a time with one thread
   each, into ``OUT/runs/<row>/seed<seed>`` (the same round-0 random draw for every row of a seed);
   then the last round's model evaluated on the test rooms (``test.json``);
3. ``OUT/results.json`` and a markdown table of test mIoU, mean ± sample std over seeds, with the
   paired differences.
"""
from __future__ import annotations

from pathlib import Path

from _protocol import Protocol, data_settings, generate_once, run_experiment


def prepare(protocol: Protocol, out: Path) -> None:
    """Step 1 (the budgets are chosen round by round by the tool: none is drawn here)."""
    from pcseg.data.synthetic import make_s3dis

    data, splits = data_settings(protocol, out, {"generator": str, "num_points": int},
                                 {"root": str, "area": int, "scenes": int, "generator_seed": int},
                                 fixed={"generator": "pcseg.data.synthetic.make_s3dis"})
    for name, spec in splits.items():
        generate_once(Path(spec["root"]), name, {**data, **spec},
                      lambda: make_s3dis(spec["root"], spec["scenes"], seed=spec["generator_seed"],
                                         num_points=data["num_points"], areas=(spec["area"],)))


if __name__ == "__main__":
    run_experiment(__doc__, prepare)
