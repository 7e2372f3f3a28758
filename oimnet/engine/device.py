"""Choose the one device a run uses."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("oimnet")


def select_device(cfg) -> torch.device:
    """CUDA device cfg.NVIDIA_DEVICE when cfg.DEVICE asks for CUDA and one exists, else CPU.

    Falling back to the CPU is announced once with a warning: a CPU run is for
    smoke tests; paper-size training needs a GPU.
    """
    want = str(cfg.DEVICE).lower()
    if want.startswith("cuda"):
        if torch.cuda.is_available():
            index = int(cfg.NVIDIA_DEVICE)
            if index >= torch.cuda.device_count():
                raise ValueError(
                    f"NVIDIA_DEVICE: invalid value {index}; this machine has {torch.cuda.device_count()} CUDA device(s)"
                )
            return torch.device("cuda", index)
        log.warning(
            "DEVICE is %r but no CUDA GPU is available: running on the CPU (slow; fine for the smoke profile)",
            cfg.DEVICE,
        )
        return torch.device("cpu")
    if want != "cpu":
        raise ValueError(f"DEVICE: invalid value {cfg.DEVICE!r}; expected 'cuda' or 'cpu'")
    return torch.device("cpu")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} {torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
