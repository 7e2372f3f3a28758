"""Evaluate a model on the test split of its dataset: eval cache, metrics, results JSON."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from oimnet.constants import SCALAR_METRICS
from oimnet.engine.device import select_device

log = logging.getLogger("oimnet")


def scalar_metrics(result: dict) -> dict[str, float]:
    """The scalar metrics (oimnet.constants.SCALAR_METRICS) an evaluation result holds, as floats."""
    return {k: float(result[k]) for k in SCALAR_METRICS if k in result and result[k] is not None}


def load_eval_records(cfg):
    """(gallery records, query records, CUHK protocol or None) of cfg's dataset."""
    from oimnet.data import load_cuhk_protocol, load_records

    ds, root = cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT
    gallery = load_records(ds, root, "gallery")
    query = load_records(ds, root, "query")
    # The full set (-1) is scored from the records' test pids: its per-query
    # lists (2,900 x ~6,978 entries on CUHK-SYSU) are never built.
    size = int(cfg.EVAL_GALLERY_SIZE)
    protocol = load_cuhk_protocol(root, size) if ds == "CUHK-SYSU" and size != -1 else None
    return gallery, query, protocol


def evaluate_model(
    model, cfg, device, out_dir: str | Path, tag: str = "final", use_gt: bool = False, records: tuple | None = None
) -> dict:
    """:func:`evaluate` of ``model`` on ``device`` (the training-time evaluations call this; every rank of a
    multi-worker run calls it, rank 0 gets the result, the others None)."""
    from oimnet.models.predictor import Predictor

    return evaluate(Predictor(model, device), cfg, out_dir, tag=tag, use_gt=use_gt, records=records)


def evaluate(
    predictor, cfg, out_dir: str | Path, tag: str = "final", use_gt: bool = False, records: tuple | None = None
) -> dict:
    """Run the predictor over gallery and query, score the protocol, write files.

    Under a multi-rank process group every rank must call this: each runs
    the predictor on its shard of the images
    (:func:`oimnet.distributed.eval_shards.sharded_eval_cache`), rank 0
    scores and writes the files and returns the result, the others return
    None.

    Writes ``eval_cache.pth`` (the release's cache format) and
    ``results_<tag>.json`` (+ ``results.json``, the latest) in out_dir.
    ``use_gt``: gallery boxes are the ground truth (as EVAL_USE_GT True); the
    files are then ``eval_cache_gt.pth`` and ``results_<tag>.json`` only, so
    ``results.json`` stays the detector's result.
    ``records``: (gallery, query, CUHK-SYSU protocol or None) to evaluate
    instead of the test split (a validation split); only
    ``results_<tag>.json`` is written then, the test split's files stay.
    Returns the full result dict (scalars + per-query top-10), None on ranks other than 0.
    """
    from oimnet.distributed.eval_shards import sharded_eval_cache
    from oimnet.eval import dataset_identity, evaluate_cache, save_cache, write_results_json

    if use_gt:
        cfg = cfg.copy()
        cfg.EVAL_USE_GT = True
    cache = sharded_eval_cache(predictor, cfg, records[:2] if records is not None else None)
    if cache is None:  # not rank 0: its shard went to rank 0, which scores
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if records is None:
        gallery, query, protocol = load_eval_records(cfg)
        identity = dataset_identity(str(cfg.INPUT.DATASET), gallery, query)
        save_cache(out_dir / ("eval_cache_gt.pth" if use_gt else "eval_cache.pth"), cache, identity)
    else:
        gallery, query, protocol = records
    result = evaluate_cache(cfg, cache, gallery, query, protocol)
    write_results_json(out_dir / f"results_{tag}.json", result)
    if not use_gt and records is None:
        write_results_json(out_dir / "results.json", result)
    log.info("evaluation (%s): %s", tag, json.dumps({k: round(v, 4) for k, v in scalar_metrics(result).items()}))
    return result


def evaluate_checkpoint(cfg, ckpt_path: str, tracking_uri: str | None = None, log_to_mlflow: bool = True) -> dict:
    """`--eval --ckpt`: load our or the release's checkpoint and evaluate it (an MLflow run "eval-<name>")."""
    from oimnet.checkpoint import read_checkpoint
    from oimnet.engine.run_setup import prepare_config, setup_logging
    from oimnet.models.predictor import Predictor

    cfg = prepare_config(cfg)
    out = Path(cfg.OUTPUT_DIR)
    handler = setup_logging(out)
    run, exc = None, None
    try:
        device = select_device(cfg)
        path = Path(ckpt_path)
        obj = read_checkpoint(str(path))
        predictor = Predictor.from_checkpoint(cfg, str(path), device, checkpoint=obj)
        log.info("loaded %s (%s)", path, predictor.load_report)
        if log_to_mlflow:
            run = _start_eval_run(cfg, path, device, tracking_uri)
        result = evaluate(predictor, cfg, out, tag="eval")
        if run:
            run.log_metrics(scalar_metrics(result), step=int(obj.get("epoch", 0)) if isinstance(obj, dict) else 0)
            run.log_artifact(out / "results.json")
        return result
    except BaseException as e:
        exc = e
        raise
    finally:
        if run:
            from oimnet.engine.mlflow_hook import end_state

            run.end(end_state(exc))
        log.removeHandler(handler)
        handler.close()


def _start_eval_run(cfg, path: Path, device, tracking_uri):
    from oimnet.config import flatten
    from oimnet.engine.device import device_description
    from oimnet.engine.tracking import RunLogger, reproducibility_tags, resolve_tracking_uri

    run = RunLogger.start(
        resolve_tracking_uri(tracking_uri), cfg.MLFLOW.EXPERIMENT, run_name=cfg.MLFLOW.RUN_NAME or f"eval-{path.stem}"
    )
    run.log_params({**flatten(cfg), "CKPT": str(path.resolve())})
    run.set_tags({**reproducibility_tags(device_description(device), int(cfg.SEED)), "mode": "eval"})
    return run
