"""One training run = one process = one device.

LUT, circular queue and ProtoNorm statistics live in this process, so a run
is never split over several GPUs; sweeps run many of these (see tune/).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from oimnet.config import flatten, to_yaml
from oimnet.engine import seeding
from oimnet.engine.checkpointing import checkpoint_path, find_last_checkpoint, save_atomic
from oimnet.engine.device import device_description, select_device
from oimnet.engine.evaluation import evaluate_model, scalar_metrics
from oimnet.engine.lr_schedule import build_scheduler
from oimnet.engine.tracking import RunLogger, reproducibility_tags, resolve_tracking_uri

log = logging.getLogger("oimnet")

LOSS_KEYS = ("loss_rpn_reg", "loss_rpn_cls", "loss_proposal_reg", "loss_proposal_cls", "loss_box_reid")

# Test hook: make the loss non-finite at this global step (1-based), to check
# that a diverging run stops cleanly. Never set in normal use.
_DEBUG_NONFINITE_STEP = "OIMNET_DEBUG_NONFINITE_STEP"
# Test hook: raise once after this epoch's checkpoint (a crashed trial), marker file in OUTPUT_DIR.
_DEBUG_CRASH_AFTER_EPOCH = "OIMNET_DEBUG_CRASH_AFTER_EPOCH"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/inf; the message names the step and the term."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM (e.g. a scheduler stopping the job) treated like Ctrl-C."""


EpochCallback = Callable[[int, dict, "str | None"], None]


def prepare_config(cfg: DictConfig) -> DictConfig:
    """Absolute paths (runs may change directory, e.g. inside Ray) and a ready dataset.

    For INPUT.DATASET "synthetic" the generated set is created at DATA_ROOT if
    absent. LUT_SIZE is checked against the training identities.
    """
    cfg = cfg.copy()
    cfg.OUTPUT_DIR = str(Path(cfg.OUTPUT_DIR).expanduser().resolve())
    cfg.INPUT.DATA_ROOT = str(Path(cfg.INPUT.DATA_ROOT).expanduser().resolve())
    if cfg.INPUT.DATASET == "synthetic":
        from oimnet.data import ensure_synthetic

        ensure_synthetic(cfg.INPUT.DATA_ROOT, **synth_kwargs(cfg))
    elif not Path(cfg.INPUT.DATA_ROOT).is_dir():
        raise FileNotFoundError(
            f"INPUT.DATA_ROOT: {cfg.INPUT.DATA_ROOT} does not exist; point it at the "
            f"{cfg.INPUT.DATASET} download (see `python -m oimnet.data.check`)"
        )
    return cfg


def synth_kwargs(cfg: DictConfig) -> dict:
    """Generator arguments from INPUT.SYNTH (0 / "" = the generator's default)."""
    s = cfg.INPUT.SYNTH
    kw: dict = {"seed": int(s.SEED)}
    if s.IDENTITIES:
        kw["identities"] = int(s.IDENTITIES)
    if s.FRAMES:
        kw["frames"] = int(s.FRAMES)
    if s.SIZE:
        w, h = str(s.SIZE).lower().split("x")
        kw["size"] = (int(w), int(h))
    return kw


def check_lut_size(cfg: DictConfig) -> None:
    from oimnet.data import num_train_ids

    n = num_train_ids(cfg.INPUT.DATASET, cfg.INPUT.DATA_ROOT)
    if n > cfg.MODEL.LOSS.LUT_SIZE:
        raise ValueError(
            f"MODEL.LOSS.LUT_SIZE: invalid value {cfg.MODEL.LOSS.LUT_SIZE}; the training split of "
            f"{cfg.INPUT.DATA_ROOT} has {n} identities, so it must be at least {n}"
        )


def setup_logging(output_dir: Path) -> logging.Handler:
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("[oimnet] %(message)s"))
        log.addHandler(stream)
    return handler


def _rng_to_safe(state: dict) -> dict:
    """RNG states as plain tensors/lists so checkpoints load with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    out = {
        "python": [state["python"][0], list(state["python"][1]), state["python"][2]],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": state["torch"],
    }
    if "cuda" in state:
        out["cuda"] = list(state["cuda"])
    return out


def _rng_from_safe(safe: dict) -> dict:
    n = safe["numpy"]
    return {
        "python": (safe["python"][0], tuple(safe["python"][1]), safe["python"][2]),
        "numpy": ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]),
        "torch": safe["torch"],
        **({"cuda": safe["cuda"]} if "cuda" in safe else {}),
    }


def _install_sigterm() -> Callable[[], None]:
    """SIGTERM -> TrainingInterrupted (run ends KILLED). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise TrainingInterrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets


def train_one_epoch(model, loader, optimizer, scheduler, scaler, cfg, device, epoch, global_step, run, amp):
    """One pass over the training set. Returns (global_step, mean loss terms)."""
    from tqdm import tqdm

    model.train()
    weights = {k: float(cfg.SOLVER[f"LW_{k[len('loss_') :].upper()}"]) for k in LOSS_KEYS}
    clip = float(cfg.SOLVER.CLIP_GRADIENTS)
    disp = max(1, int(cfg.DISP_PERIOD))
    debug_step = int(os.environ.get(_DEBUG_NONFINITE_STEP, "0") or 0)
    sums: dict[str, float] = {}
    window: dict[str, list[float]] = {}
    n = 0
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCHS}",
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        file=sys.stderr,
    )
    for images, targets in bar:
        images, targets = _to_device(images, targets, device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            losses = model(images, targets)
        losses = {k: v.float() for k, v in losses.items()}
        global_step += 1
        if debug_step and global_step == debug_step:
            losses["loss_box_reid"] = losses["loss_box_reid"] * float("nan")
        values = {k: v.detach() for k, v in losses.items()}
        finite = torch.stack([torch.isfinite(v).all() for v in values.values()]).all()
        if not bool(finite):
            bad = [k for k, v in values.items() if not torch.isfinite(v).all()]
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1}, step {global_step}: "
                + ", ".join(f"{k} = {values[k].item()}" for k in bad)
            )
        total = sum(weights.get(k, 1.0) * v for k, v in losses.items())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()

        items = {k: v.item() for k, v in values.items()}
        items["loss"] = float(total.detach())
        n += 1
        for k, v in items.items():
            sums[k] = sums.get(k, 0.0) + v
            window.setdefault(k, []).append(v)
        lr = optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{items['loss']:.3f}", reid=f"{items.get('loss_box_reid', 0):.3f}", lr=f"{lr:.2e}")
        if global_step % disp == 0:
            avg = {k: float(np.mean(v)) for k, v in window.items()}
            avg["lr"] = lr
            run.log_metrics(avg, step=global_step)
            log.info("step %d epoch %d: %s", global_step, epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in avg.items()))
            window = {}
    bar.close()
    means = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
    return global_step, means


def build_optimizer(model, cfg):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params,
        lr=float(cfg.SOLVER.BASE_LR),
        momentum=float(cfg.SOLVER.SGD_MOMENTUM),
        weight_decay=float(cfg.SOLVER.WEIGHT_DECAY),
    )


def train_run(
    cfg: DictConfig,
    *,
    resume: bool = False,
    epoch_callback: EpochCallback | None = None,
    mlflow_parent_run_id: str | None = None,
    mlflow_tags: dict | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Train (and evaluate) one configuration; returns the final metrics.

    With ``resume`` the last checkpoint in OUTPUT_DIR (if any) is continued and
    so is its MLflow run. The MLflow run ends FINISHED, FAILED (exception) or
    KILLED (Ctrl-C / SIGTERM), never RUNNING.
    """
    from oimnet.data import build_train_loader
    from oimnet.models import build_model

    cfg = prepare_config(cfg)
    out = Path(cfg.OUTPUT_DIR)
    handler = setup_logging(out)
    restore_sigterm = _install_sigterm()
    state = None
    if resume:
        last = find_last_checkpoint(out)
        if last is None:
            log.info("--resume: no checkpoint in %s, starting from scratch", out)
        else:
            log.info("resuming from %s", last)
            state = torch.load(last, map_location="cpu", weights_only=True)
    seed = int(state["seed"]) if state else seeding.resolve_seed(int(cfg.SEED))
    device = select_device(cfg)
    amp = bool(cfg.SOLVER.AMP) and device.type == "cuda"
    uri = resolve_tracking_uri(tracking_uri)
    run = RunLogger.start(
        uri,
        cfg.MLFLOW.EXPERIMENT,
        run_name=cfg.MLFLOW.RUN_NAME or out.name,
        tags=mlflow_tags,
        parent_run_id=mlflow_parent_run_id,
        resume_run_id=state.get("mlflow_run_id") if state else None,
    )
    (out / "mlflow_run_id").write_text(run.run_id + "\n")
    (out / "config.yaml").write_text(to_yaml(cfg))
    status = "FAILED"
    try:
        check_lut_size(cfg)
        if state is None:
            params = flatten(cfg)
            params["SEED_USED"] = seed
            run.log_params(params)
            run.set_tags(reproducibility_tags(device_description(device), seed))
            run.set_tags({"output_dir": str(out), "amp": str(amp)})
            run.log_artifact(out / "config.yaml")
        log.info("run %s on %s, seed %d, output %s, MLflow %s", run.run_id, device_description(device), seed, out, uri)

        seeding.seed_everything(seed)
        model = build_model(cfg).to(device)
        if amp:  # like the release, keep the LUT and queue in float16 under CUDA AMP
            reid_loss = model.roi_heads.reid_loss
            reid_loss.lut, reid_loss.cq = reid_loss.lut.half(), reid_loss.cq.half()
        loader = build_train_loader(cfg, seed=seed)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, len(loader))
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        start_epoch, global_step = 0, 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["lr_scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, global_step = int(state["epoch"]), int(state["global_step"])

        max_epochs = int(cfg.SOLVER.MAX_EPOCHS)
        metrics: dict = dict(state.get("metrics", {})) if state else {}
        t_start = time.time()
        for epoch in range(start_epoch, max_epochs):
            seeding.seed_everything(seeding.epoch_seed(seed, epoch))
            if hasattr(loader.batch_sampler, "set_epoch"):
                loader.batch_sampler.set_epoch(epoch)  # shuffle order and flips drawn from (seed, epoch)
            t0 = time.time()
            global_step, train_means = train_one_epoch(
                model, loader, optimizer, scheduler, scaler, cfg, device, epoch, global_step, run, amp
            )
            done = epoch + 1
            epoch_metrics = dict(train_means)
            epoch_metrics["epoch_time_s"] = time.time() - t0
            last = done == max_epochs
            ckpt = None
            if done % int(cfg.CKPT_PERIOD) == 0 or last:
                ckpt = save_atomic(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "lr_scheduler": scheduler.state_dict(),
                        "epoch": done,
                        "scaler": scaler.state_dict(),
                        "rng": _rng_to_safe(seeding.rng_state()),
                        "config": to_yaml(cfg),
                        "global_step": global_step,
                        "seed": seed,
                        "mlflow_run_id": run.run_id,
                        "metrics": metrics,
                    },
                    checkpoint_path(out, done),
                )
                log.info("checkpoint %s", ckpt)
            if done % int(cfg.EVAL_PERIOD) == 0 or last:
                result = evaluate_model(model, cfg, device, out, tag=f"epoch{done:03d}")
                metrics = scalar_metrics(result)
                epoch_metrics.update(metrics)
                run.log_artifact(out / "results.json")
            run.log_metrics(epoch_metrics, step=done)
            if epoch_callback is not None:
                epoch_callback(done, {"epoch": done, **epoch_metrics}, str(ckpt) if ckpt else None)
            crash_at = int(os.environ.get(_DEBUG_CRASH_AFTER_EPOCH, "0") or 0)
            marker = out / ".debug_crashed"
            if crash_at and done == crash_at and not marker.exists():
                marker.write_text("1")
                raise RuntimeError(f"{_DEBUG_CRASH_AFTER_EPOCH}={crash_at}: simulated crash after epoch {done}")
        log.info("training done in %.1f s; final metrics %s", time.time() - t_start, metrics)
        final_ckpt = find_last_checkpoint(out)
        if cfg.MLFLOW.LOG_CHECKPOINT and final_ckpt is not None:
            run.log_artifact(final_ckpt, "checkpoints")
        status = "FINISHED"
        return metrics
    except (KeyboardInterrupt, TrainingInterrupted, SystemExit):
        # SystemExit: e.g. Ray stopping a trial when its sweep is interrupted
        status = "KILLED"
        log.error("interrupted: MLflow run %s marked KILLED; resume with --resume", run.run_id)
        raise
    except BaseException as e:
        log.error(
            "run failed: %s: %s (MLflow run %s marked FAILED; the last checkpoint in %s is intact)",
            type(e).__name__,
            e,
            run.run_id,
            out,
        )
        raise
    finally:
        handler.flush()
        try:
            run.log_artifact(out / "train.log")
        except Exception:
            pass
        run.end(status)
        log.removeHandler(handler)
        handler.close()
        restore_sigterm()


def evaluate_checkpoint(
    cfg: DictConfig, ckpt_path: str, tracking_uri: str | None = None, log_to_mlflow: bool = True
) -> dict:
    """`--eval --ckpt`: load our or the release's checkpoint and evaluate it."""
    cfg = prepare_config(cfg)
    out = Path(cfg.OUTPUT_DIR)
    handler = setup_logging(out)
    device = select_device(cfg)
    run = None
    status = "FAILED"
    try:
        from oimnet.models import model_from_checkpoint, read_checkpoint

        path = Path(ckpt_path)
        obj = read_checkpoint(str(path))
        model, report = model_from_checkpoint(cfg, str(path), checkpoint=obj)
        log.info("loaded %s (%s)", path, report)
        model.to(device)
        if log_to_mlflow:
            run = RunLogger.start(
                resolve_tracking_uri(tracking_uri),
                cfg.MLFLOW.EXPERIMENT,
                run_name=cfg.MLFLOW.RUN_NAME or f"eval-{path.stem}",
            )
            run.log_params({**flatten(cfg), "CKPT": str(path.resolve())})
            run.set_tags({**reproducibility_tags(device_description(device), int(cfg.SEED)), "mode": "eval"})
        result = evaluate_model(model, cfg, device, out, tag="eval")
        if run:
            run.log_metrics(scalar_metrics(result), step=int(obj.get("epoch", 0)) if isinstance(obj, dict) else 0)
            run.log_artifact(out / "results.json")
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if run:
            run.end(status)
        log.removeHandler(handler)
        handler.close()
