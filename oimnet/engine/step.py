"""The step strategy: one optimisation step on one batch, on one device.

Forward (under autocast when AMP is on), the non-finite check, the weighted
loss sum, backward through the gradient scaler, clipping, optimizer step.
The loop (:mod:`oimnet.engine.loop`) calls :meth:`SingleDeviceStep.run_step`
and knows nothing else about it, so a multi-process strategy (gradient
all-reduce) replaces this class without touching the loop or the hooks. The
gradient scaler lives here because scaling sits between backward and the
optimizer step; its state travels in the checkpoint through
:meth:`state_dict`.

No MLflow, Ray or OmegaConf here: a bare GPU machine runs this path.
"""

from __future__ import annotations

import torch

# Loss term -> its weight's key in SOLVER (explicit, so grep finds every reader).
LOSS_WEIGHT_KEYS = {
    "loss_rpn_reg": "LW_RPN_REG",
    "loss_rpn_cls": "LW_RPN_CLS",
    "loss_proposal_reg": "LW_PROPOSAL_REG",
    "loss_proposal_cls": "LW_PROPOSAL_CLS",
    "loss_box_reid": "LW_BOX_REID",
}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/inf; the message names the step and the term."""


def loss_weights(solver) -> dict[str, float]:
    """{loss term: weight} from the SOLVER section of a config."""
    return {term: float(solver[key]) for term, key in LOSS_WEIGHT_KEYS.items()}


def to_device(images, targets, device):
    """A training batch (list of image tensors, list of target dicts) moved to ``device``."""
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets


class SingleDeviceStep:
    """One process, one device.

    Args:
        model: the detector; ``model(images, targets)`` returns {term: scalar loss}.
        optimizer: steps the model's parameters.
        device: where batches go.
        weights: {loss term: weight}; a term without a weight counts 1.
        clip: max gradient norm (0 = no clipping).
        amp: float16 autocast + gradient scaling on ``device`` (the trainer turns it
            on for CUDA only: CPU float16 kernels are slower than float32; the
            tests run it on the CPU, where torch has autocast and a scaler too).
    """

    def __init__(
        self,
        model,
        optimizer,
        device: torch.device,
        weights: dict[str, float],
        clip: float,
        amp: bool,
        sampling_seed: int | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.weights = dict(weights)
        self.clip = float(clip)
        self.amp = bool(amp)
        # Keyed sampling (oimnet.models.sampling): each image's anchors/RoIs drawn from (seed, epoch, index).
        self.sampling_seed = sampling_seed
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        if self.amp:  # like the release, keep the LUT and queue in float16 under AMP
            reid_loss = getattr(model, "module", model).roi_heads.reid_loss
            reid_loss.lut, reid_loss.cq = reid_loss.lut.half(), reid_loss.cq.half()

    def reported(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss values this step reports and checks (one process: its own)."""
        return values

    def run_step(self, batch, step: int, epoch: int) -> dict[str, float]:
        """Train on one batch; ``step`` (1-based, global) and ``epoch`` (1-based) name it in errors.

        Returns {loss term: value, "loss": weighted total} as floats.
        Raises NonFiniteLossError (before any parameter changes) when a term is NaN/inf.
        """
        images, targets = to_device(*batch, self.device)
        if self.sampling_seed is not None:
            from oimnet.models.sampling import set_sampling_keys

            set_sampling_keys(self.model, self.sampling_seed, epoch, [int(t["index"]) for t in targets])
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.model(images, targets)
        losses = {k: v.float() for k, v in losses.items()}
        values = self.reported({k: v.detach() for k, v in losses.items()})
        if not bool(torch.stack([torch.isfinite(v).all() for v in values.values()]).all()):
            bad = [k for k, v in values.items() if not torch.isfinite(v).all()]
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch}, step {step}: " + ", ".join(f"{k} = {values[k].item()}" for k in bad)
            )
        total = sum(self.weights.get(k, 1.0) * v for k, v in losses.items())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        items = {k: v.item() for k, v in values.items()}
        items["loss"] = self.total_value(total, items)
        return items

    def total_value(self, total: torch.Tensor, items: dict[str, float]) -> float:
        """The weighted total this step reports (one process: its own)."""
        return float(total.detach())

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.scaler.load_state_dict(state)


class DataParallelStep(SingleDeviceStep):
    """One rank of N: ``model`` is the DDP-wrapped detector (:func:`oimnet.distributed.ddp.wrap_data_parallel`).

    The batch is this rank's share of the global batch; DDP averages the
    gradients in backward, the OIM memory and the norm statistics are
    synchronised inside the model, so clipping and the optimizer step see
    the one-process gradient on every rank. The reported loss terms are the
    means over the ranks (each rank's re-id loss is scaled so that this mean
    is the one-process loss), so every rank reports, checks and raises alike.
    Keyed sampling is always on (``sampling_seed`` is required).
    """

    def __init__(self, model, optimizer, device, weights, clip, amp, sampling_seed: int):
        super().__init__(model, optimizer, device, weights, clip, amp, sampling_seed)

    def reported(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch.distributed as dist

        names = list(values)
        stacked = torch.stack([values[k].float() for k in names])
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
        return dict(zip(names, stacked.unbind(0)))

    def total_value(self, total: torch.Tensor, items: dict[str, float]) -> float:
        # The ranks' mean of the weighted totals: the weighted sum of the mean terms.
        return sum(self.weights.get(k, 1.0) * v for k, v in items.items())
