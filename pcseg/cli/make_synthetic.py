"""Write a synthetic dataset in an official raw layout.

Examples::

    python tools/make_synthetic.py --kind scannet --out data/syn_scannet --scenes 8 --seed 0
    python tools/make_synthetic.py --kind s3dis --out data/syn_s3dis --scenes 12 --seed 0 --corrupt-lines 2
    python tools/make_synthetic.py --kind semantickitti --out data/syn_kitti --scenes 20 --seed 0
    python tools/make_synthetic.py --kind images --out data/image2d --scenes 64 --seed 0

For ``semantickitti``, ``--scenes`` is the number of frames per sequence (``--sequences``); for
``images`` it is the number of street camera images (the last quarter form the val split).
"""
from __future__ import annotations

import argparse
import time

from pcseg.data.synthetic import make_s3dis, make_scannet, make_semantickitti, write_image_folder
from pcseg.engine.cli import tool_errors


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=("scannet", "s3dis", "semantickitti", "images"))
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--scenes", type=int, default=4, help="rooms, frames per sequence (semantickitti) or images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", type=int, default=120_000, help="points per room (scannet, s3dis)")
    parser.add_argument("--areas", default="1,2,3,4,5,6", help="s3dis: areas to fill, in turn")
    parser.add_argument("--corrupt-lines", type=int, default=0, help="s3dis: corrupt lines injected per room")
    parser.add_argument("--sequences", default="00,08", help="semantickitti: sequence ids")
    parser.add_argument("--azimuth-steps", type=int, default=2048, help="semantickitti: LiDAR columns per sweep")
    parser.add_argument("--image-scale", type=float, default=0.5, help="semantickitti: image size / 1241x376")
    parser.add_argument("--width", type=int, default=160, help="images: image width in pixels (height keeps 1241:376)")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error(f"--scenes expected >= 1, got {args.scenes}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    with tool_errors():
        start = time.perf_counter()
        if args.kind == "scannet":
            written = make_scannet(args.out, args.scenes, args.seed, args.points)
        elif args.kind == "s3dis":
            areas = tuple(int(a) for a in args.areas.split(","))
            written = make_s3dis(args.out, args.scenes, args.seed, args.points, areas, args.corrupt_lines)
        elif args.kind == "semantickitti":
            sequences = tuple(s.strip() for s in args.sequences.split(","))
            written = make_semantickitti(args.out, args.scenes, args.seed, sequences, args.azimuth_steps,
                                         args.image_scale)
        else:
            written = [name for split in write_image_folder(args.out, args.scenes, args.seed, args.width).values()
                       for name in split]
        print(f"wrote {len(written)} {args.kind} scenes to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
