"""Train, resume or evaluate one OIMNet / OIMNet++ / OIMNet+++ run.

Examples:
  python -m oimnet.train --cfg experiments/synthetic.yaml
  python -m oimnet.train --cfg experiments/prw.yaml MODEL.ROI_HEAD.AUGMENT True
  python -m oimnet.train --cfg experiments/prw.yaml MODEL.ROI_HEAD.NORM_TYPE 'none' MODEL.LOSS.TYPE 'OIM'
  python -m oimnet.train --cfg experiments/synthetic.yaml --resume
  python -m oimnet.train --cfg experiments/prw.yaml --eval --ckpt prw_oimp.pth
  python -m oimnet.train --cfg experiments/prw.yaml --print-config SOLVER.BASE_LR=0.001

Variants: OIMNet = NORM_TYPE none + LOSS.TYPE OIM; OIMNet++ = protonorm + LOIM;
OIMNet+++ = OIMNet++ with MODEL.ROI_HEAD.AUGMENT True.

One run uses one device (CUDA device NVIDIA_DEVICE, else the CPU with a
warning), or with SOLVER.WORLD_SIZE N > 1 N Ray Train workers (one GPU each,
else CPU workers with gloo) that train like one process with N x the batch:
  python -m oimnet.train --cfg experiments/prw.yaml SOLVER.WORLD_SIZE 2
Every run is recorded in MLflow: MLFLOW_TRACKING_URI, else
sqlite:///<project>/mlruns/mlflow.db.
"""

from __future__ import annotations

import argparse
import sys

from oimnet.cli import add_config_args, config_from_args, parse_args, usage_error
from oimnet.config import to_yaml


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m oimnet.train",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR (and its MLflow run)"
    )
    p.add_argument("--eval", action="store_true", help="only evaluate the checkpoint given by --ckpt")
    p.add_argument("--ckpt", metavar="PATH", help="checkpoint to evaluate (ours or the authors' release)")
    p.add_argument("--print-config", action="store_true", help="print the merged config as YAML and exit")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the project's local store)",
    )
    p.add_argument("--no-tracking", action="store_true", help="record nothing in MLflow (it need not be installed)")
    add_config_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = config_from_args(args.cfg, args.opts)
    if args.print_config:
        sys.stdout.write(to_yaml(cfg))
        return 0
    if args.eval and not args.ckpt:
        usage_error("--eval needs --ckpt PATH")
    if args.ckpt and not args.eval:
        usage_error("--ckpt is only used with --eval (to continue training use --resume)")
    from oimnet.engine.evaluation import evaluate_checkpoint
    from oimnet.engine.trainer import train_run

    try:
        if args.eval:
            import os

            if not os.path.isfile(args.ckpt):
                usage_error(f"--ckpt {args.ckpt}: checkpoint not found")
            result = evaluate_checkpoint(
                cfg, args.ckpt, tracking_uri=args.tracking_uri, log_to_mlflow=not args.no_tracking
            )
            from oimnet.engine.evaluation import scalar_metrics

            for k, v in scalar_metrics(result).items():
                print(f"{k:>20s}: {v:.4f}")
        else:
            if cfg.MODEL.BACKBONE.WEIGHTS:  # a bad file is named before any MLflow run exists
                from oimnet.models.backbone import read_imagenet_state

                read_imagenet_state(str(cfg.MODEL.BACKBONE.WEIGHTS), str(cfg.MODEL.BACKBONE.NAME))
            run = train_run
            if int(cfg.SOLVER.WORLD_SIZE) > 1:  # N synchronised workers through Ray Train
                from oimnet.engine.workers import train_on_workers as run
            metrics = run(cfg, resume=args.resume, tracking_uri=args.tracking_uri, track=not args.no_tracking)
            for k, v in metrics.items():
                print(f"{k:>20s}: {v:.4f}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # bad input; OSError: e.g. "no space left on device writing FILE"
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
