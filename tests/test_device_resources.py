"""Device choice and per-trial Ray resources as pure functions of a given inventory (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from oimnet.config import load_config
from oimnet.engine.device import choose_device, select_device
from tune.trial_resources import plan_trial_resources

INVENTORIES = {
    "4 GPUs, 32 CPUs": {"GPU": 4.0, "CPU": 32.0},
    "1 GPU, 16 CPUs": {"GPU": 1.0, "CPU": 16.0},
    "2 CPUs": {"CPU": 2.0},
}


@pytest.mark.parametrize("workers", [0, 1, 4, 7, 40])
@pytest.mark.parametrize("name", list(INVENTORIES))
def test_trial_request_fits_the_cluster(name, workers):
    """One GPU per trial where there are GPUs, CPUs = 1 + loader workers capped so that the cluster can meet it."""
    cluster = INVENTORIES[name]
    resources, device = plan_trial_resources(cluster, workers)
    for key, amount in resources.items():
        assert amount <= cluster.get(key.upper(), 0), (name, workers, resources)  # never a request that pends forever
        assert amount >= 1 and float(amount).is_integer()
    gpus = int(cluster.get("GPU", 0))
    if gpus:
        assert device == "cuda" and resources["gpu"] == 1
        # every GPU can hold a trial at once: the CPU requests of `gpus` trials fit too
        assert resources["cpu"] * gpus <= cluster["CPU"]
    else:
        assert device == "cpu" and "gpu" not in resources
    assert resources["cpu"] == min(1 + workers, int(cluster["CPU"]) // max(gpus, 1))


def test_trial_request_examples():
    assert plan_trial_resources({"GPU": 4, "CPU": 32}, 4) == ({"gpu": 1, "cpu": 5}, "cuda")
    assert plan_trial_resources({"GPU": 4, "CPU": 32}, 12) == ({"gpu": 1, "cpu": 8}, "cuda")
    assert plan_trial_resources({"GPU": 1, "CPU": 16}, 4) == ({"gpu": 1, "cpu": 5}, "cuda")
    assert plan_trial_resources({"CPU": 2}, 0) == ({"cpu": 1}, "cpu")
    assert plan_trial_resources({"CPU": 2}, 4) == ({"cpu": 2}, "cpu")
    # more GPUs than CPUs, a fraction of a GPU, an empty inventory
    assert plan_trial_resources({"GPU": 8, "CPU": 4}, 2) == ({"gpu": 1, "cpu": 1}, "cuda")
    assert plan_trial_resources({"GPU": 0.5, "CPU": 8}, 2) == ({"cpu": 3}, "cpu")
    assert plan_trial_resources({}, 3) == ({"cpu": 1}, "cpu")


@pytest.mark.parametrize(
    "want,index,gpus,expected",
    [
        ("cuda", 0, 4, "cuda:0"),
        ("cuda", 3, 4, "cuda:3"),
        ("CUDA", 0, 1, "cuda:0"),
        ("cuda:2", 0, 4, "cuda:2"),
        ("cuda", 0, 0, "cpu"),  # no GPU: the CPU, with a warning from select_device
        ("cuda", 5, 0, "cpu"),
        ("cpu", 0, 4, "cpu"),
        ("cpu", 9, 0, "cpu"),
    ],
)
def test_choose_device(want, index, gpus, expected):
    assert choose_device(want, index, gpus) == torch.device(expected)


@pytest.mark.parametrize(
    "want,index,gpus,match",
    [
        ("cuda", 1, 1, r"NVIDIA_DEVICE: invalid value 1; this machine has 1 CUDA device\(s\)"),
        ("cuda", -1, 2, "NVIDIA_DEVICE: invalid value -1"),
        ("cuda:4", 0, 4, "NVIDIA_DEVICE: invalid value 4"),
        ("gpu", 0, 4, "DEVICE: invalid value 'gpu'; expected 'cuda' or 'cpu'"),
        ("cuda:x", 0, 4, "DEVICE: invalid value 'cuda:x'"),
    ],
)
def test_choose_device_errors(want, index, gpus, match):
    with pytest.raises(ValueError, match=match):
        choose_device(want, index, gpus)


def test_select_device_on_this_machine(caplog):
    """select_device is choose_device with this machine's GPU count; the CPU fallback is announced."""
    cfg = load_config(None, ["DEVICE", "cuda"])
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with caplog.at_level("WARNING", logger="oimnet"):
        device = select_device(cfg)
    assert device == choose_device("cuda", 0, gpus)
    assert (device.type == "cpu") == any("no CUDA GPU is available" in r.message for r in caplog.records)
    assert select_device(load_config(None, ["DEVICE", "cpu"])) == torch.device("cpu")
