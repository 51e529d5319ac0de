"""Write a synthetic dataset in an official raw layout.

Examples::

    python tools/make_synthetic.py --kind scannet --out data/syn_scannet --scenes 8 --seed 0
    python tools/make_synthetic.py --kind s3dis --out data/syn_s3dis --scenes 12 --seed 0 --corrupt-lines 2
    python tools/make_synthetic.py --kind semantickitti --out data/syn_kitti --scenes 20 --seed 0

For ``semantickitti``, ``--scenes`` is the number of frames per sequence (``--sequences``).
"""
from __future__ import annotations

import argparse
import time

from pcseg.data.synthetic import make_s3dis, make_scannet, make_semantickitti


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=("scannet", "s3dis", "semantickitti"))
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--scenes", type=int, default=4, help="rooms, or frames per sequence for semantickitti")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=120_000, help="points per room (scannet, s3dis)")
    parser.add_argument("--areas", default="1,2,3,4,5,6", help="s3dis: areas to fill, in turn")
    parser.add_argument("--corrupt-lines", type=int, default=0, help="s3dis: corrupt lines injected per room")
    parser.add_argument("--sequences", default="00,08", help="semantickitti: sequence ids")
    parser.add_argument("--azimuth-steps", type=int, default=2048, help="semantickitti: LiDAR columns per sweep")
    parser.add_argument("--image-scale", type=float, default=0.5, help="semantickitti: image size / 1241x376")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error(f"--scenes expected >= 1, got {args.scenes}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    start = time.perf_counter()
    if args.kind == "scannet":
        written = make_scannet(args.out, args.scenes, args.seed, args.points)
    elif args.kind == "s3dis":
        areas = tuple(int(a) for a in args.areas.split(","))
        written = make_s3dis(args.out, args.scenes, args.seed, args.points, areas, args.corrupt_lines)
    else:
        sequences = tuple(s.strip() for s in args.sequences.split(","))
        written = make_semantickitti(args.out, args.scenes, args.seed, sequences, args.azimuth_steps, args.image_scale)
    print(f"wrote {len(written)} {args.kind} scenes to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
