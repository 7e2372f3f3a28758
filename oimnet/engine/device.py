"""Choose the one device a run uses."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("oimnet")


def select_device(cfg, distributed: bool = False) -> torch.device:
    """CUDA device cfg.NVIDIA_DEVICE when cfg.DEVICE asks for CUDA and one exists, else CPU.

    Falling back to the CPU is announced once with a warning: a CPU run is for
    smoke tests; paper-size training needs a GPU.  A rank of a multi-worker
    run (``distributed``) takes the GPU its launcher made current (Ray Train
    gives each worker its own) instead of NVIDIA_DEVICE.
    """
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = torch.cuda.current_device() if distributed and cuda_devices else int(cfg.NVIDIA_DEVICE)
    device = choose_device(str(cfg.DEVICE), index, cuda_devices)
    if device.type == "cpu" and str(cfg.DEVICE).lower().startswith("cuda"):
        log.warning(
            "DEVICE is %r but no CUDA GPU is available: running on the CPU (slow; fine for the smoke profile)",
            cfg.DEVICE,
        )
    return device


def choose_device(want: str, index: int, cuda_devices: int) -> torch.device:
    """The device for DEVICE ``want`` ("cuda", "cuda:N" or "cpu") and NVIDIA_DEVICE ``index`` on a machine with ``cuda_devices`` GPUs.

    A pure function of what is there: "cuda" without any GPU gives the CPU
    (the caller warns); an index the machine does not have is an error, as
    is any other DEVICE.  "cuda:N" names the index itself.
    """
    text = want.strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text != "cuda" and not text.startswith("cuda:"):
        raise ValueError(f"DEVICE: invalid value {want!r}; expected 'cuda' or 'cpu'")
    if text.startswith("cuda:"):
        try:
            index = int(text[len("cuda:") :])
        except ValueError:
            raise ValueError(f"DEVICE: invalid value {want!r}; expected 'cuda', 'cuda:N' or 'cpu'") from None
    if cuda_devices <= 0:
        return torch.device("cpu")
    if not 0 <= index < cuda_devices:
        raise ValueError(
            f"NVIDIA_DEVICE: invalid value {index}; this machine has {cuda_devices} CUDA device(s) (0..{cuda_devices - 1})"
        )
    return torch.device("cuda", index)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} {torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
