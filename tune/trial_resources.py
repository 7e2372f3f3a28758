"""What one trial asks Ray for, and what a CPU-only paper sweep would cost.

Asking Ray for ``{"gpu": 1}`` on a cluster without GPUs does not fail: the
trial stays PENDING forever. So resources are decided from what the cluster
has (``ray.cluster_resources()``) before the Tuner is built.
"""

from __future__ import annotations

import os

# Training images per split (PRW: 5,704 frames; CUHK-SYSU: 11,206 images).
TRAIN_IMAGES = {"prw": 5704, "cuhk": 11206}

# Basis of the CPU estimate: one forward+backward pass of torchvision's
# ResNet-50 on a 1x3x900x1500 tensor took 37 s with 2 threads on the 2-core
# development machine (torch 2.14, fp32). OIMNet's backbone + RoI head costs
# about the same per image; RPN, loss and evaluation are left out, so the
# estimate is a lower bound.
CPU_SECONDS_PER_IMAGE_2CORES = 37.0


def local_cluster_resources() -> dict[str, float]:
    """What a local ``ray.init()`` would see, without starting Ray (for --dry-run)."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # pragma: no cover - broken CUDA install
        gpus = 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def plan_trial_resources(cluster: dict[str, float], loader_workers: int = 0) -> tuple[dict[str, float], str]:
    """Resources of one trial and the DEVICE it trains on: a pure function of what the cluster has.

    Args:
        cluster: ``ray.cluster_resources()`` (keys "CPU", "GPU"; missing = 0 GPUs, 1 CPU).
        loader_workers: INPUT.NUM_WORKERS_TRAIN of the trials (max over them).
    Returns:
        ({"gpu": 1, "cpu": k}, "cuda") when the cluster has a whole GPU: one
        GPU per trial (LUT, queue and ProtoNorm statistics live in one
        process), k = the main process plus its loader workers, at most the
        CPUs per GPU so that every GPU can hold a trial; ({"cpu": k}, "cpu")
        otherwise, k at most the cluster's CPUs.  Never more of anything
        than the cluster has: Ray leaves such a trial PENDING forever.
    """
    gpus = int(float(cluster.get("GPU", 0) or 0))  # a fraction of a GPU cannot hold a trial
    cpus = max(1, int(float(cluster.get("CPU", 1) or 1)))
    want = 1 + max(0, int(loader_workers))
    if gpus >= 1:
        return {"gpu": 1, "cpu": max(1, min(want, cpus // gpus))}, "cuda"
    return {"cpu": min(want, cpus)}, "cpu"


DRIVER_CPU = 0.01  # what a multi-worker trial (a Ray Train driver) holds itself; Ray refuses an empty bundle


def driver_resources(resources: dict[str, float], world_size: int) -> dict[str, float]:
    """What the Tune trial itself asks for when its run is WORLD_SIZE Ray Train workers.

    The trial is then only the driver of a TorchTrainer whose workers ask for
    their own GPU/CPU (:func:`worker_cpus` each, and one GPU each on a GPU
    cluster), so it holds a token CPU share: otherwise N workers plus a
    driver would need more than N slots and wait forever on a small machine.
    """
    return dict(resources) if world_size <= 1 else {"cpu": DRIVER_CPU}


def worker_cpus(resources: dict[str, float], world_size: int) -> float:
    """CPUs one of the WORLD_SIZE workers asks for: the per-trial CPU count, less its share of the driver's token."""
    return max(DRIVER_CPU, float(resources.get("cpu", 1)) - DRIVER_CPU / max(1, world_size))


def estimate_cpu_hours(n_trials: int, epochs: int, train_images: int, cpus: float) -> float:
    """Lower-bound wall hours of a paper-profile sweep on CPUs only.

    Trials share the machine's cores, so the total is the sum over trials
    scaled by the core count relative to the 2-core measurement.
    """
    per_image = CPU_SECONDS_PER_IMAGE_2CORES * 2.0 / max(cpus, 1.0)
    return n_trials * epochs * train_images * per_image / 3600.0


def format_resources(res: dict[str, float]) -> str:
    return ", ".join(f"{k}={int(v) if float(v).is_integer() else v}" for k, v in res.items())
