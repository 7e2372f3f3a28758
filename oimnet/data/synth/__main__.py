"""python -m oimnet.data.synth --format {prw,cuhk} --out DIR [--seed N]
[--identities N] [--frames N] [--size WxH] [--annotations-only]"""

from __future__ import annotations

import argparse
import json
import sys

from . import DEFAULTS, generate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m oimnet.data.synth",
        description="Write a synthetic person-search dataset in PRW or CUHK-SYSU format.",
    )
    ap.add_argument("--format", choices=("prw", "cuhk"), required=True)
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument(
        "--identities",
        type=int,
        default=DEFAULTS["identities"],
        help="total identities, 60%% train / 40%% test (default %(default)s)",
    )
    ap.add_argument("--frames", type=int, default=DEFAULTS["frames"], help="default %(default)s")
    ap.add_argument("--size", default=DEFAULTS["size"], help="frame size WxH (default %(default)s)")
    ap.add_argument(
        "--annotations-only",
        action="store_true",
        help="write annotation files only, no images (fast; for parser timing)",
    )
    args = ap.parse_args(argv)
    try:
        meta = generate(
            args.out, args.format, args.seed, args.identities, args.frames, args.size, args.annotations_only
        )
    except ValueError as exc:
        ap.error(str(exc))
    print(json.dumps({"out": args.out, "generation_s": meta["generation_s"], "counts": meta["counts"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
