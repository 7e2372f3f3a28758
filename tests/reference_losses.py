"""Plain reference versions of the OIM/LOIM memory update and of ProtoNorm (test and benchmark oracles).

Written the way the method is defined: one RoI at a time for the memory,
one prototype at a time for ProtoNorm.  Slow on purpose; no vectorization.
"""

from __future__ import annotations

import torch
from torch import Tensor

UNLABELED = 5555


def reference_oim_loss(inputs: Tensor, labels: Tensor, lut: Tensor, cq: Tensor, scalar: float) -> Tensor:
    """Mean cross-entropy over labeled RoIs of scalar * x @ [lut; cq]^T (0 when there is none)."""
    num_pids = lut.shape[0]
    memory = torch.cat([lut, cq]).to(inputs.dtype)
    terms = []
    for i in range(inputs.shape[0]):
        y = int(labels[i])
        if 1 <= y <= num_pids:
            logits = scalar * (inputs[i] @ memory.t())
            terms.append(torch.logsumexp(logits, 0) - logits[y - 1])
    if not terms:
        return inputs.sum() * 0.0
    return torch.stack(terms).mean()


def sequential_memory_update(
    lut: Tensor,
    cq: Tensor,
    head: int,
    inputs: Tensor,
    labels: Tensor,
    loss_type: str = "OIM",
    momentum: float = 0.5,
    ious: Tensor | None = None,
    eps: float = 0.1,
    inplace: bool = False,
) -> tuple[Tensor, Tensor, int]:
    """Per-RoI memory update in RoI order; returns (lut, cq, head), new copies unless ``inplace``."""
    if not inplace:
        lut, cq = lut.clone(), cq.clone()
    num_pids, q = lut.shape[0], cq.shape[0]
    for i in range(inputs.shape[0]):
        y = int(labels[i])
        x = inputs[i].to(lut.dtype)
        if y == 0:
            continue
        if y <= num_pids:
            if loss_type == "OIM":
                row = momentum * lut[y - 1] + (1.0 - momentum) * x
            else:
                s = min(max(float(ious[i]), 0.7), 1.0 - eps)
                row = (1.0 - s) * lut[y - 1] + s * x
            lut[y - 1] = row / row.norm().clamp_min(1e-12)
        elif q > 0:
            cq[head] = x
            head = (head + 1) % q
    return lut, cq, head


def reference_protonorm(
    x: Tensor,
    labels: Tensor,
    eps: float = 1e-5,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    unlabeled_id: int = UNLABELED,
) -> tuple[Tensor, Tensor, Tensor]:
    """ProtoNorm in training mode, prototype by prototype.

    x: (N, C) or (N, C, H, W); labels (N,).  Returns (y, mean (C,), biased var (C,)).
    Prototypes: one per distinct label (mean of its RoIs [and positions]),
    except the unlabeled id, where every RoI is its own prototype.
    """
    dims = [0] + list(range(2, x.dim()))
    prototypes = []
    for lab in sorted(set(labels.tolist())):
        members = [i for i in range(x.shape[0]) if int(labels[i]) == lab]
        if lab == unlabeled_id:
            for i in members:
                prototypes.append(x[i : i + 1].mean(dim=dims))
        else:
            prototypes.append(x[members].mean(dim=dims))
    mean = torch.stack(prototypes).mean(0)
    shape = [1, -1] + [1] * (x.dim() - 2)
    centered = x - mean.view(shape)
    var = (centered * centered).mean(dim=dims)
    y = centered / torch.sqrt(var.view(shape) + eps)
    if weight is not None:
        y = y * weight.view(shape) + bias.view(shape)
    return y, mean, var


def reference_running_stats(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, n: int, momentum: float = 0.1
) -> tuple[Tensor, Tensor]:
    """Running statistics after one batch: exponential average, var stored unbiased (n / (n - 1))."""
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    return new_mean, new_var
