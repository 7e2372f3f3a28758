"""``python -m oimnet.checkpoint PATH [--cfg FILE] [KEY VALUE ...]``

Tells what a checkpoint's keys reveal (backbone, norm type, LUT/queue sizes;
AUGMENT and the loss type leave no trace in the keys, so they come from
``--cfg`` or are reported unknown) and whether it loads strictly into the
model that the configuration builds, or, without ``--cfg``, the model the
keys imply. Lists missing / unexpected / mismatched keys. Exit status 0 when
it loads, 1 when it does not, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys

from oimnet.checkpoint.files import ReleaseCheckpointError, read_state_dict
from oimnet.checkpoint.release import (
    build_model_to_load,
    check_release_state_dict,
    infer_from_keys,
    load_release_state_dict,
)
from oimnet.cli import add_config_args, config_from_args, parse_args, usage_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oimnet.checkpoint", description=__doc__.split("\n\n")[1])
    parser.add_argument(
        "path", metavar="PATH", help="checkpoint file ({'model': state_dict, ...} or a bare state dict)"
    )
    add_config_args(parser)
    args = parse_args(parser, argv)

    try:
        state = read_state_dict(args.path)
    except (FileNotFoundError, ReleaseCheckpointError) as exc:
        usage_error(str(exc))
    info = infer_from_keys(state)
    print(f"checkpoint: {args.path} ({len(state)} keys)")
    print("what the keys reveal:")
    for key, value in info["overrides"].items():
        print(f"  {key} = {value}")
    for note in info["notes"]:
        print(f"  note: {note}")

    if args.cfg or args.opts:
        cfg = config_from_args(args.cfg, args.opts or [])
        source = f"config {args.cfg}" if args.cfg else "default config + overrides"
        augment = str(bool(cfg.MODEL.ROI_HEAD.AUGMENT))
        for key, value in info["overrides"].items():
            node = cfg
            for part in key.split("."):
                node = node[part]
            if node != value:
                print(f"  differs from {source}: {key} = {node} there, {value} in the keys")
    else:
        cfg = config_from_args(None, dict(info["overrides"]))
        source = "the model the keys imply"
        augment = "unknown (pass --cfg; assumed False)"
    print(f"MODEL.ROI_HEAD.AUGMENT: {augment}")
    print(f"MODEL.LOSS.TYPE: {cfg.MODEL.LOSS.TYPE if (args.cfg or args.opts) else 'unknown (OIM assumed)'}")

    try:
        model = build_model_to_load(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cannot build the model of {source}: {exc}")
        return 1
    report = check_release_state_dict(model, state)
    print(
        f"loading strictly into {source} "
        f"(backbone {cfg.MODEL.BACKBONE.NAME}, norm {cfg.MODEL.ROI_HEAD.NORM_TYPE}, "
        f"LUT {cfg.MODEL.LOSS.LUT_SIZE}, queue {cfg.MODEL.LOSS.CQ_SIZE}):"
    )
    print(report.format())
    if report.ok:
        load_release_state_dict(model, state)
        print("result: LOADS")
        return 0
    print("result: DOES NOT LOAD")
    return 1


if __name__ == "__main__":
    sys.exit(main())
