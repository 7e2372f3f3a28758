"""One prepared check of the CUDA path, for a lent GPU machine: time, memory and agreement figures.

    python benchmarks/gpu_check.py --out gpu_out                    # on the GPU machine (about 5-8 min on one H200)
    python benchmarks/gpu_check.py --out cpu_out --device cpu --quick   # the same code on the CPU (the test suite)

Sections (each timed; one that fails is recorded with its error and the
others still run):
  train_step   OIMNet, OIMNet++, OIMNet+++ at the paper setting (PRW config,
               ResNet-50 from random init -- no ImageNet weights can be
               downloaded there --, batch 5 at 900 x 1500, AMP): median step
               time of 20 after warm-up, images/s, peak GPU memory, and the
               float32 vs AMP losses of one forward on the same batch.
  inference    gallery detection + embeddings (float32, no_grad, as the
               evaluation runs it) at batch 1 and 4: images/s.
  kernels      the vectorized memory update (OIM, LOIM) and ProtoNorm 1-d / 2-d
               against their per-RoI reference loops on the device
               (tests/reference_losses.py): agreement and times.
  end_to_end   a 2-epoch training run on the generated dataset through the
               engine (no MLflow): epoch 1, then --resume to epoch 2,
               checkpoints and the evaluation's metrics.
Writes ``gpu_check.json`` and ``gpu_check.md`` under --out, rewritten after
every section (a run cut short keeps what it measured).

Needs torch, torchvision, numpy, scipy, pillow, pyyaml, tqdm and OmegaConf
(the config); no Ray, no MLflow. Where OmegaConf is not installed it is
taken from ``benchmarks/vendor/`` (git-ignored), which ``--vendor`` fills
from this environment's installed omegaconf package (pure Python; it needs
only PyYAML, and antlr4, which omegaconf 2.4 carries inside itself and
older versions beside it) so that the folder can travel with the working
tree.
--quick: the tiny backbone on small images, fewer repeats; --device cpu
--quick finishes in under a minute on two cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "benchmarks" / "vendor"
for _p in (str(ROOT),):
    if _p not in sys.path:
        sys.path.insert(0, _p)

VARIANTS = {  # keys selecting each method (experiments/README.md)
    "OIMNet": {"MODEL.ROI_HEAD.NORM_TYPE": "none", "MODEL.LOSS.TYPE": "OIM", "MODEL.ROI_HEAD.AUGMENT": False},
    "OIMNet++": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.LOSS.TYPE": "LOIM", "MODEL.ROI_HEAD.AUGMENT": False},
    "OIMNet+++": {"MODEL.ROI_HEAD.NORM_TYPE": "protonorm", "MODEL.LOSS.TYPE": "LOIM", "MODEL.ROI_HEAD.AUGMENT": True},
}
# --quick: the smoke profile's backbone and proposal counts
QUICK_MODEL = {
    "MODEL.BACKBONE.NAME": "tiny",
    # the quick batch's 160 x 208 images keep their size in the model's resize
    "INPUT.MIN_SIZE": 160,
    "INPUT.MAX_SIZE": 208,
    "MODEL.RPN.ANCHOR_SIZES": [32, 64, 128],
    "MODEL.RPN.PRE_NMS_TOPN_TRAIN": 600,
    "MODEL.RPN.POST_NMS_TOPN_TRAIN": 100,
    "MODEL.RPN.PRE_NMS_TOPN_TEST": 300,
    "MODEL.RPN.POST_NMS_TOPN_TEST": 50,
    "MODEL.ROI_HEAD.BATCH_SIZE_TRAIN": 32,
}


def vendor_omegaconf(dest: Path = VENDOR) -> list[str]:
    """Copy the installed omegaconf package (and antlr4, which omegaconf < 2.4 needs beside it) into ``dest``."""
    import importlib

    import omegaconf

    modules = [omegaconf]
    if not (Path(omegaconf.__file__).parent / "vendor" / "antlr4").is_dir():  # 2.4 carries its own antlr4
        modules.append(importlib.import_module("antlr4"))
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for module in modules:
        src = Path(module.__file__).parent
        shutil.copytree(src, dest / src.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        copied.append(f"{src.name} {getattr(module, '__version__', '')}".strip())
    return copied


def _ensure_omegaconf() -> str:
    try:
        import omegaconf
    except ImportError:
        if not (VENDOR / "omegaconf").is_dir():
            raise SystemExit(
                f"error: OmegaConf is not installed and {VENDOR} has no copy; run "
                "`python benchmarks/gpu_check.py --vendor` where it is installed and carry benchmarks/vendor"
            ) from None
        sys.path.insert(0, str(VENDOR))
        import omegaconf
    return f"omegaconf {omegaconf.__version__} from {Path(omegaconf.__file__).parent.parent}"


# ----------------------------------------------------------------- helpers
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of fn after ``warmup`` calls (device synchronized around each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _peak_gib(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _config(variant: str, quick: bool, extra: dict | None = None):
    from oimnet.config import load_config

    overrides = {**VARIANTS[variant], "MODEL.BACKBONE.WEIGHTS": "", **(QUICK_MODEL if quick else {}), **(extra or {})}
    return load_config(str(ROOT / "experiments" / "prw.yaml"), overrides)


def _batch_shape(quick: bool, batch: int | None = None) -> tuple[int, int, int]:
    return (batch or 2, 160, 208) if quick else (batch or 5, 900, 1500)


# ----------------------------------------------------------------- sections
def train_step(device, quick: bool) -> dict:
    """Per variant: float32 vs AMP losses of one forward, then step time / images/s / peak memory of the AMP step."""
    import torch

    from benchmarks.bench_model import synthetic_scene
    from oimnet.engine.step import SingleDeviceStep, loss_weights
    from oimnet.engine.trainer import build_optimizer
    from oimnet.models import build_model

    amp = device.type == "cuda"  # as the trainer: AMP on CUDA only (CPU float16 kernels are slow)
    warmup, repeats = (1, 2) if quick else (3, 20)
    batch, height, width = _batch_shape(quick)
    out = {
        "setting": f"batch {batch} x 3 x {height} x {width}, AMP {amp}, {'tiny' if quick else 'resnet50'} random init"
    }
    for variant in VARIANTS:
        cfg = _config(variant, quick)
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        images, targets = synthetic_scene(batch, height, width, int(cfg.MODEL.LOSS.LUT_SIZE), device)
        with torch.no_grad():  # a non-empty memory, so that the re-id loss is not log(L + Q) for every RoI
            lut = model.roi_heads.reid_loss.lut
            lut.copy_(torch.nn.functional.normalize(torch.randn(lut.shape, device=device), dim=1))
        # float32 vs AMP (float16 autocast, float16 memory) on the same batch, weights and RoI draws
        losses = {}
        for name, dtype in (("float32", None), ("amp", torch.float16)):
            m = copy.deepcopy(model)
            if dtype is not None:
                reid = m.roi_heads.reid_loss
                reid.lut, reid.cq = reid.lut.half(), reid.cq.half()
            torch.manual_seed(1)
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                losses[name] = {k: float(v) for k, v in m(images, targets).items()}
            del m
        rel = {k: abs(losses["amp"][k] - v) / max(abs(v), 1e-12) for k, v in losses["float32"].items()}
        _reset_peak(device)
        strategy = SingleDeviceStep(
            model, build_optimizer(model, cfg), device, loss_weights(cfg.SOLVER), float(cfg.SOLVER.CLIP_GRADIENTS), amp
        )
        outputs = []

        def one_step(strategy=strategy, batch=(images, targets), outputs=outputs):
            outputs.append(strategy.run_step(batch, 1, 1))

        times = _timed(one_step, device, repeats, warmup)
        step_s = statistics.median(times)
        out[variant] = {
            "step_s_median": round(step_s, 4),
            "step_s_min": round(min(times), 4),
            "images_per_s": round(batch / step_s, 2),
            "peak_gib": _peak_gib(device),
            "losses_float32": losses["float32"],
            "losses_amp": losses["amp"],
            "max_rel_diff_amp": round(max(rel.values()), 5),
            "finite": all(all(v == v and abs(v) != float("inf") for v in o.values()) for o in outputs),
            "scale": strategy.scaler.get_scale() if amp else None,
            "steps_timed": repeats,
        }
        model = strategy = None  # free the device memory before the next variant
        _reset_peak(device)
    return out


def inference(device, quick: bool) -> dict:
    """Gallery detection + embeddings (float32, no_grad) images/s at batch 1 and 4 (OIMNet++)."""
    import torch

    from benchmarks.bench_model import synthetic_scene
    from oimnet.models import build_model

    cfg = _config("OIMNet++", quick)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    out = {}
    for batch in (1, 4):
        _, height, width = _batch_shape(quick, batch)
        images, _ = synthetic_scene(batch, height, width, int(cfg.MODEL.LOSS.LUT_SIZE), device)
        _reset_peak(device)
        detections = []
        with torch.no_grad():
            times = _timed(
                lambda images=images, detections=detections: detections.append(model(images)),
                device,
                1 if quick else 10,
                1 if quick else 3,
            )
        s = statistics.median(times)
        out[f"batch{batch}"] = {
            "s_median": round(s, 4),
            "images_per_s": round(batch / s, 2),
            "peak_gib": _peak_gib(device),
            "detections_per_image": round(sum(len(d["boxes"]) for d in detections[-1]) / batch, 1),
            "input": f"{batch} x 3 x {height} x {width}",
        }
    return out


def kernels(device, quick: bool) -> dict:
    """Memory update and ProtoNorm on the device against their per-RoI reference loops."""
    import torch

    from benchmarks.bench_losses import memory_update_case, realistic_labels
    from oimnet.models.protonorm import ProtoNorm1d, ProtoNorm2d
    from tests.reference_losses import reference_protonorm

    out = {}
    fast_n, ref_n = (3, 1) if quick else (20, 3)
    for loss_type in ("OIM", "LOIM"):
        case = memory_update_case(loss_type, device)
        agree, err = case.agree, case.err
        t_fast = _timed(case.update, device, fast_n)
        t_ref = _timed(case.reference, device, ref_n, warmup=0)
        out[f"{loss_type.lower()}_update"] = {
            "fast_s": round(min(t_fast), 6),
            "reference_s": round(min(t_ref), 6),
            "speedup": round(min(t_ref) / min(t_fast), 1),
            "max_abs_err": err,
            "agree": agree,
            "rois": int(case.labels.numel()),
        }
    for name, shape in (("protonorm1d", (640, 256)), ("protonorm2d", (160, 512, 7, 7) if quick else (640, 512, 7, 7))):
        torch.manual_seed(0)
        xp = (torch.randn(*shape, device=device) + 0.5).requires_grad_()
        grad = torch.randn(*shape, device=device)
        lab = realistic_labels(shape[0]).to(device)
        pn = (ProtoNorm2d if len(shape) == 4 else ProtoNorm1d)(shape[1]).to(device)
        w = pn.weight.detach().clone().requires_grad_() if pn.affine else None
        b = pn.bias.detach().clone().requires_grad_() if pn.affine else None

        def run(fn, xp=xp, grad=grad):
            xp.grad = None
            y = fn()
            y.backward(grad)
            return y.detach(), xp.grad.clone()

        def fast_fn(pn=pn, xp=xp, lab=lab):
            return pn(xp, lab)

        def ref_fn(xp=xp, lab=lab, pn=pn, w=w, b=b):
            return reference_protonorm(xp, lab, pn.eps, w, b)[0]

        (y1, g1), (y2, g2) = run(fast_fn), run(ref_fn)
        err = max((y1 - y2).abs().max().item(), (g1 - g2).abs().max().item())
        t_fast = _timed(lambda fast_fn=fast_fn: run(fast_fn), device, fast_n)
        t_ref = _timed(lambda ref_fn=ref_fn: run(ref_fn), device, ref_n, warmup=0)
        out[name] = {
            "fast_s": round(min(t_fast), 6),
            "reference_s": round(min(t_ref), 6),
            "speedup": round(min(t_ref) / min(t_fast), 1),
            "max_abs_err": err,
            "agree": err <= 1e-4,
            "shape": list(shape),
        }
    return out


def end_to_end(device, quick: bool, out_dir: Path) -> dict:
    """2 epochs on the generated dataset through the engine, interrupted after epoch 1's checkpoint and resumed."""
    import torch

    from oimnet.checkpoint import list_checkpoints
    from oimnet.config import load_config
    from oimnet.engine.hooks import HookBase
    from oimnet.engine.trainer import train_run

    class Interrupted(RuntimeError):
        pass

    class StopAfterFirstEpoch(HookBase):  # runs after the checkpoint hook: a run killed between epochs
        def after_epoch(self) -> None:
            if self.trainer.epoch == 0:
                raise Interrupted("stopped after epoch 1")

    work = out_dir / "end_to_end"
    overrides = {
        "OUTPUT_DIR": str(work / "run"),
        "INPUT.DATA_ROOT": str(work / "data"),
        "DEVICE": device.type,
        "SOLVER.MAX_EPOCHS": 2,
        "SOLVER.LR_DECAY_MILESTONES": [100],
        "EVAL_PERIOD": 100,  # at the end only
    }
    if quick:
        overrides.update({"INPUT.SYNTH.FRAMES": 12, "INPUT.SYNTH.IDENTITIES": 6, "INPUT.SYNTH.SIZE": "160x120",
                          "INPUT.MIN_SIZE": 120, "INPUT.MAX_SIZE": 160, "MODEL.LOSS.LUT_SIZE": 6,
                          "MODEL.LOSS.CQ_SIZE": 16})  # fmt: skip
    cfg = load_config(str(ROOT / "experiments" / "synthetic.yaml"), overrides)
    t0 = time.perf_counter()
    try:
        train_run(cfg, track=False, hooks=[StopAfterFirstEpoch()])
        interrupted = False
    except Interrupted:
        interrupted = True
    first = [p.name for p in list_checkpoints(work / "run")]
    t1 = time.perf_counter()
    metrics = train_run(cfg, resume=True, track=False)
    t2 = time.perf_counter()
    ckpts = list_checkpoints(work / "run")
    last = torch.load(ckpts[-1], map_location="cpu", weights_only=True) if ckpts else {}
    return {
        "interrupted_after_epoch1": interrupted,
        "checkpoints_after_interruption": first,
        "checkpoints": [p.name for p in ckpts],
        "resumed_to_epoch": int(last.get("epoch", 0)),
        "global_step": int(last.get("global_step", 0)),
        "scaler": last.get("scaler") or None,
        "lut_dtype": str(last["model"]["roi_heads.reid_loss.lut"].dtype) if last else None,
        "metrics": metrics,
        "epoch1_s": round(t1 - t0, 2),
        "resume_to_epoch2_s": round(t2 - t1, 2),
        "ok": interrupted
        and first == ["epoch_001.pth"]
        and [p.name for p in ckpts] == ["epoch_001.pth", "epoch_002.pth"]
        and int(last.get("epoch", 0)) == 2
        and "mAP" in metrics,
    }


# ----------------------------------------------------------------- report
def environment(device) -> dict:
    import numpy
    import torch
    import torchvision

    env = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": str(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(
            {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "cudnn": torch.backends.cudnn.version()}
        )
    return env


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"# gpu_check {env['date_utc']} UTC on {env.get('gpu', env['device'])} (torch {env['torch']})", ""]
    sec = result["sections"]
    ts = sec.get("train_step", {})
    if "OIMNet" in ts:
        lines += [f"Training step ({ts['setting']}):", "",
                  "| variant | step s (median) | images/s | peak GiB | max rel. loss diff fp32 vs AMP | finite |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for v in VARIANTS:
            r = ts.get(v)
            if r:
                lines.append(
                    f"| {v} | {r['step_s_median']} | {r['images_per_s']} | {r['peak_gib']} "
                    f"| {r['max_rel_diff_amp']} | {r['finite']} |"
                )
        lines.append("")
    inf = sec.get("inference", {})
    if "batch1" in inf:
        lines += ["| inference | input | s (median) | images/s | peak GiB |", "|---|---|---|---|---|"]
        for k in ("batch1", "batch4"):
            r = inf[k]
            lines.append(f"| {k} | {r['input']} | {r['s_median']} | {r['images_per_s']} | {r['peak_gib']} |")
        lines.append("")
    ker = sec.get("kernels", {})
    if ker and "error" not in ker:
        lines += ["| kernel | fast s | reference loop s | speedup | agree (max abs err) |", "|---|---|---|---|---|"]
        for k, r in ker.items():
            if isinstance(r, dict):
                lines.append(
                    f"| {k} | {r['fast_s']} | {r['reference_s']} | {r['speedup']} | {r['agree']} ({r['max_abs_err']:.1e}) |"
                )
        lines.append("")
    e2e = sec.get("end_to_end", {})
    if "ok" in e2e:
        lines += [f"End to end (synthetic, 2 epochs, interrupted after epoch 1 and resumed): ok={e2e['ok']}, checkpoints {e2e['checkpoints']}, "
                  f"epoch 1 {e2e['epoch1_s']} s, resume to epoch 2 {e2e['resume_to_epoch2_s']} s, "
                  f"metrics {json.dumps({k: round(v, 4) for k, v in e2e['metrics'].items()})}", ""]  # fmt: skip
    for name, r in sec.items():
        if "error" in r:
            lines += [f"**{name} failed**: `{r['error']}`", ""]
    lines.append(f"Section times (s): {json.dumps(result['section_s'])}; total {result['total_s']} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="output folder (created)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny backbone, small images, fewer repeats")
    p.add_argument(
        "--sections", nargs="*", default=None, help="run only these (train_step inference kernels end_to_end)"
    )
    p.add_argument("--vendor", action="store_true", help=f"copy the installed omegaconf/antlr4 into {VENDOR} and exit")
    args = p.parse_args(argv)
    if args.vendor:
        print("copied", ", ".join(vendor_omegaconf()), "to", VENDOR)
        return 0
    if not args.out:
        p.error("--out is required")
    config_source = _ensure_omegaconf()
    import torch

    logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)  # "random init" warnings
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU (use --device cpu)", file=sys.stderr)
        return 2
    device = torch.device(args.device if args.device != "cuda" else "cuda:0")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = {
        "train_step": lambda: train_step(device, args.quick),
        "inference": lambda: inference(device, args.quick),
        "kernels": lambda: kernels(device, args.quick),
        "end_to_end": lambda: end_to_end(device, args.quick, out_dir),
    }
    chosen = args.sections or list(sections)
    unknown = [s for s in chosen if s not in sections]
    if unknown:
        p.error(f"--sections {unknown}: expected some of {list(sections)}")
    result = {"environment": {**environment(device), "config": config_source, "quick": args.quick},
              "sections": {}, "section_s": {}, "total_s": 0.0}  # fmt: skip
    start = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        try:
            result["sections"][name] = sections[name]()
        except Exception as e:  # noqa: BLE001 - record it and run the other sections
            traceback.print_exc()
            result["sections"][name] = {"error": f"{type(e).__name__}: {e}"}
        result["section_s"][name] = round(time.perf_counter() - t0, 1)
        result["total_s"] = round(time.perf_counter() - start, 1)
        (out_dir / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (out_dir / "gpu_check.md").write_text(markdown(result))
        print(f"[gpu_check] {name}: {result['section_s'][name]} s", file=sys.stderr, flush=True)
    print(markdown(result))
    return 1 if any("error" in r for r in result["sections"].values()) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
