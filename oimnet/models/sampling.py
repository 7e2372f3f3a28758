"""Anchor and RoI sampling drawn from per-image generators, so the sampled set does not depend on the batch split.

torchvision's ``BalancedPositiveNegativeSampler`` draws its permutations
from the global torch RNG, one image after another: the RoIs an image gets
depend on which images came before it in the process.  With N processes each
holding a slice of the batch that order changes with N.  Here each image
draws from its own generator, seeded by a key of (seed, epoch, image index,
stream), so the same seed samples the same anchors and RoIs on 1 or N
workers.

It is a mode (:func:`use_keyed_sampling`), not the default: the global-RNG
draw order of one process is what the authors' release does and what the
training-step check against it compares, so single-process runs keep it
unless asked.  Multi-worker runs switch it on (and so must a one-process
run meant to equal them).  Without keys set the keyed samplers behave
exactly like torchvision's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

__all__ = ["KeyedSampler", "sampling_key", "use_keyed_sampling", "set_sampling_keys", "STREAM_RPN", "STREAM_ROI"]

STREAM_RPN, STREAM_ROI, STREAM_FLIP = 1, 2, 3  # one independent stream per purpose


def sampling_key(seed: int, epoch: int, index: int, stream: int) -> int:
    """A 63-bit generator seed from (seed, epoch, dataset image index, stream); distinct tuples give unrelated streams."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index), int(stream)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class KeyedSampler(BalancedPositiveNegativeSampler):
    """The balanced sampler with one generator per image of the current batch.

    :meth:`set_keys` gives the keys of the batch's images in order; each
    image the sampler then sees (one call for all images, as the RPN makes,
    or one call per image, as the RoI head makes) draws from the next one.
    Same counts and masks as torchvision's sampler; only the source of the
    permutations differs.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        super().__init__(batch_size_per_image, positive_fraction)
        self._generators: list[torch.Generator] | None = None
        self._cursor = 0

    def set_keys(self, keys: list[int] | None) -> None:
        """Generator seeds of the next batch's images (None: back to the global RNG)."""
        self._generators = None if keys is None else [torch.Generator().manual_seed(int(k)) for k in keys]
        self._cursor = 0

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if self._generators is None:
            return super().__call__(matched_idxs)
        if self._cursor + len(matched_idxs) > len(self._generators):
            raise RuntimeError(
                f"KeyedSampler: keys were set for {len(self._generators)} images but image "
                f"{self._cursor + len(matched_idxs)} was sampled; call set_sampling_keys(model, ...) for every batch"
            )
        pos_masks, neg_masks = [], []
        for matched in matched_idxs:
            gen = self._generators[self._cursor]
            self._cursor += 1
            positive = torch.where(matched >= 1)[0]
            negative = torch.where(matched == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            # CPU generator: the same draw on every device.
            perm_pos = torch.randperm(positive.numel(), generator=gen)[:num_pos].to(positive.device)
            perm_neg = torch.randperm(negative.numel(), generator=gen)[:num_neg].to(negative.device)
            pos_mask = torch.zeros_like(matched, dtype=torch.uint8)
            neg_mask = torch.zeros_like(matched, dtype=torch.uint8)
            pos_mask[positive[perm_pos]] = 1
            neg_mask[negative[perm_neg]] = 1
            pos_masks.append(pos_mask)
            neg_masks.append(neg_mask)
        return pos_masks, neg_masks


def _swap(owner: nn.Module) -> None:
    old = owner.fg_bg_sampler
    if not isinstance(old, KeyedSampler):
        owner.fg_bg_sampler = KeyedSampler(old.batch_size_per_image, old.positive_fraction)


def use_keyed_sampling(model: nn.Module) -> nn.Module:
    """Give the detector's RPN and RoI head keyed samplers (same quotas); returns the model.

    ``model`` is an :class:`oimnet.models.OIMNet` (or a wrapper with ``.module``).
    """
    core = getattr(model, "module", model)
    _swap(core.rpn)
    _swap(core.roi_heads)
    return model


def set_sampling_keys(model: nn.Module, seed: int, epoch: int, indices: list[int] | None) -> None:
    """Key the next training forward's sampling by (seed, epoch, dataset index of each image, in batch order).

    ``indices`` None returns the samplers to the global RNG.  Needs
    :func:`use_keyed_sampling` first.
    """
    core = getattr(model, "module", model)
    for owner, stream in ((core.rpn, STREAM_RPN), (core.roi_heads, STREAM_ROI)):
        sampler = owner.fg_bg_sampler
        if not isinstance(sampler, KeyedSampler):
            raise TypeError("set_sampling_keys: call use_keyed_sampling(model) first")
        sampler.set_keys(None if indices is None else [sampling_key(seed, epoch, i, stream) for i in indices])
