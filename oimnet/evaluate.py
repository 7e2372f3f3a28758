"""Re-score an eval cache (or a checkpoint) on the dataset's search protocol.

    python -m oimnet.evaluate --cfg FILE --cache PATH [--json] [--out RESULTS.json] [KEY VALUE ...]
    python -m oimnet.evaluate --cfg FILE --ckpt PATH [--cache PATH_TO_WRITE] ...

The records (and, for CUHK-SYSU, the TestG{EVAL_GALLERY_SIZE} protocol) are
read from INPUT.DATA_ROOT through oimnet.data; the cache must list the gallery
and query images in that order. Prints a table, or with --json one JSON
object of the scalar metrics (fractions in [0, 1]); --out writes the full
results (with the top-10 of every query) as JSON. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from oimnet.cli import add_config_args, config_from_args, parse_args, usage_error


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m oimnet.evaluate", description=__doc__.split("\n\n")[0])
    add_config_args(p)
    p.add_argument(
        "--cache",
        metavar="PATH",
        help="eval cache to re-score (torch.save dict of lists); with --ckpt: where to write the computed cache",
    )
    p.add_argument("--ckpt", metavar="PATH", help="checkpoint: compute the eval cache with the model first")
    p.add_argument("--json", action="store_true", help="print one JSON object of scalar metrics instead of a table")
    p.add_argument("--out", metavar="RESULTS.json", help="write the full results (per-query top-10) here")
    p.add_argument(
        "--multi-view",
        action="store_true",
        help="PRW: main metrics on the cross-camera variant (both are always reported)",
    )
    return p


def _cache_from_checkpoint(cfg, ckpt_path: str) -> dict:
    """Checkpoint (ours or the authors' release) -> eval cache, on cfg's device."""
    from oimnet.engine.device import select_device
    from oimnet.models.predictor import Predictor

    try:
        predictor = Predictor.from_checkpoint(cfg, ckpt_path, select_device(cfg))
    except (FileNotFoundError, ValueError) as exc:
        usage_error(str(exc))
    return predictor.eval_cache(cfg)


def _load_data(cfg):
    from oimnet.data import DatasetError, load_cuhk_protocol, load_records

    ds, root = str(cfg.INPUT.DATASET), str(cfg.INPUT.DATA_ROOT)
    try:
        gallery = load_records(ds, root, "gallery")
        query = load_records(ds, root, "query")
        size = int(cfg.EVAL_GALLERY_SIZE)  # the full set (-1) is scored from the records' pids
        protocol = load_cuhk_protocol(root, size) if ds == "CUHK-SYSU" and size != -1 else None
    except (DatasetError, ValueError, OSError) as exc:
        usage_error(f"cannot read the {ds} test split at INPUT.DATA_ROOT={root}: {exc}")
    return gallery, query, protocol


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = config_from_args(args.cfg, args.opts)
    from oimnet.eval import (
        CacheError,
        dataset_identity,
        evaluate_cache,
        format_table,
        load_cache,
        save_cache,
        write_results_json,
    )
    from oimnet.eval.results import scalar_items

    if not args.cache and not args.ckpt:
        usage_error("give --cache PATH (re-score a saved eval cache) or --ckpt PATH (compute it with the model)")
    try:
        if args.ckpt:
            cache = _cache_from_checkpoint(cfg, args.ckpt)
        else:
            cache = load_cache(args.cache)
        gallery, query, protocol = _load_data(cfg)
        if args.ckpt and args.cache:
            save_cache(args.cache, cache, dataset_identity(str(cfg.INPUT.DATASET), gallery, query))
        name = f"eval cache {args.cache}" if args.cache else f"eval cache computed from {args.ckpt}"
        metrics = evaluate_cache(
            cfg, cache, gallery, query, protocol, multi_view=args.multi_view or None, cache_name=name
        )
    except (CacheError, ValueError) as exc:
        usage_error(str(exc))
    if args.out:
        write_results_json(args.out, metrics)
    if args.json:
        print(json.dumps(scalar_items(metrics)))
    else:
        print(format_table(metrics))
        if args.out:
            print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
