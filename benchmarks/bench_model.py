"""Training-step time and peak memory of the detector (resnet50 and the smoke backbone).

One step = forward (all five losses) + backward + SGD step, on synthetic
images with a few person boxes. There is no slower reference to compare
with, so ``reference_s``/``speedup`` are None and ``fast_s`` = ``step_s``;
``agree`` says every loss was finite. Peak memory: CUDA max allocated
(``torch.cuda.max_memory_allocated``) on GPU, the process's peak RSS on CPU.
"""

from __future__ import annotations

import logging
import resource
import sys
import time

import torch

BENCH_SEED = 0


def synthetic_scene(batch: int, height: int, width: int, num_pids: int, device) -> tuple[list, list]:
    g = torch.Generator().manual_seed(BENCH_SEED)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, height, width, generator=g).to(device))
        n = 4
        w = (torch.rand(n, generator=g) * 0.15 + 0.08) * width
        h = w * 2.5
        x1 = torch.rand(n, generator=g) * (width - w)
        y1 = torch.rand(n, generator=g) * (height - h).clamp(min=1)
        boxes = torch.stack([x1, y1, x1 + w, (y1 + h).clamp(max=height - 1)], 1)
        labels = torch.randint(1, num_pids + 1, (n,), generator=g)
        labels[-1] = 5555
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def time_train_step(
    name: str, overrides: dict, batch: int, height: int, width: int, steps: int, amp: bool = True
) -> dict:
    """Seconds per training step (median of ``steps`` after one warm-up) and peak memory."""
    from oimnet.config import load_config
    from oimnet.models import build_model

    logging.getLogger("oimnet.models.backbone").setLevel(logging.ERROR)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(BENCH_SEED)
    # MIN/MAX_SIZE = the scene's sides: the model's resize keeps height x width
    cfg = load_config(None, {"INPUT.MIN_SIZE": min(height, width), "INPUT.MAX_SIZE": max(height, width), **overrides})
    model = build_model(cfg).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=5e-4)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    images, targets = synthetic_scene(batch, height, width, int(cfg.MODEL.LOSS.LUT_SIZE), device)
    finite = True

    def step() -> None:
        nonlocal finite
        with torch.autocast(device.type, enabled=use_amp):
            losses = model(images, targets)
        total = sum(losses.values())
        finite = finite and all(bool(torch.isfinite(v)) for v in losses.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        scaler.step(opt)
        scaler.update()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up (allocator, cuDNN autotune)
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    return {
        "name": name,
        "step_s": step_s,
        "peak_mb": round(_peak_mb(device), 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "input": f"{batch}x3x{height}x{width}",
        "amp": use_amp,
        "reference_s": None,
        "fast_s": step_s,
        "speedup": None,
        "agree": finite,
    }


def train_step_resnet50(quick: bool) -> dict:
    """resnet50 OIMNet+++ (LOIM, ProtoNorm, AUGMENT; CUHK-SYSU memory sizes).

    CPU: 1 image 240x320 (quick) or 2 at 480x640; GPU: 2 at 480x640 (quick)
    or the paper's 5 at 900x1500 with AMP.
    """
    gpu = torch.cuda.is_available()
    if quick:
        batch, h, w = (2, 480, 640) if gpu else (1, 240, 320)
    else:
        batch, h, w = (5, 900, 1500) if gpu else (2, 480, 640)
    overrides = {
        "MODEL.BACKBONE.NAME": "resnet50",
        "MODEL.LOSS.TYPE": "LOIM",
        "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
        "MODEL.ROI_HEAD.AUGMENT": True,
    }
    return time_train_step("train_step_resnet50", overrides, batch, h, w, steps=1 if quick else 3)


def train_step_smoke(quick: bool) -> dict:
    """tiny backbone at the smoke size: 4 images 240x320 (quick: 2 at 160x208), small memory."""
    batch, h, w = (2, 160, 208) if quick else (4, 240, 320)
    overrides = {
        "MODEL.BACKBONE.NAME": "tiny",
        "MODEL.LOSS.TYPE": "LOIM",
        "MODEL.LOSS.LUT_SIZE": 50,
        "MODEL.LOSS.CQ_SIZE": 50,
        "MODEL.ROI_HEAD.NORM_TYPE": "protonorm",
        "MODEL.ROI_HEAD.AUGMENT": True,
        "MODEL.RPN.ANCHOR_SIZES": [32, 64, 128],
    }
    return time_train_step("train_step_smoke", overrides, batch, h, w, steps=2 if quick else 5)


BENCHMARKS = {"train_step_resnet50": train_step_resnet50, "train_step_smoke": train_step_smoke}

if __name__ == "__main__":
    import json

    quick = "--quick" in sys.argv
    for fn in BENCHMARKS.values():
        print(json.dumps(fn(quick)))
