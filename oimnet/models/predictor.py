"""One predictor from images to outputs, used by every caller that runs a model.

``Predictor(model, device)`` (or ``Predictor.from_checkpoint(cfg, path,
device)``) owns what running a model for inference takes: the model on its
device, eval mode and ``no_grad`` for the call (the caller's train/eval mode
is restored after it), float16 autocast when ``amp`` is asked for, and the
transfer of the outputs to the host as float32 numpy arrays. Images go in as
the test loader gives them: 3 x H x W float tensors in [0, 1] at their
original size (the model resizes them); every box in and out is
(x1, y1, x2, y2) in original pixels.

- ``detect(images)`` -> one :class:`ImageResult` per image (boxes, scores,
  embeddings); ``detect(images, query_boxes)`` puts each image's query box
  first (score 1, embedded from the box itself), as the search protocol
  runs a query image.
- ``embed(images, boxes)`` -> the embeddings of given boxes, float32 (n_i, 256).
- ``predict_split(cfg, "gallery" | "query", records, indices)`` and
  ``predict_loader(loader, split, indices)``: a pass over (a subset of) a
  test split, returning ``{record index: ImageResult}``; results of
  disjoint subsets (shards) merge by dict union, and :func:`eval_cache`
  turns the merged results into the eval cache.

Training-time evaluation, ``--eval --ckpt``, ``python -m oimnet.evaluate
--ckpt`` and the demo all run the model through this class.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

__all__ = ["ImageResult", "Predictor", "eval_cache", "SPLITS"]

SPLITS = ("gallery", "query")


@dataclass(frozen=True)
class ImageResult:
    """One image's outputs on the host, in original pixels.

    boxes float32 (n, 4) x1, y1, x2, y2; scores float32 (n,) detection scores
    (1 for given boxes); embeddings float32 (n, 256), L2-normalized rows.
    """

    boxes: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray

    @property
    def detections(self) -> np.ndarray:
        """float32 (n, 5): x1, y1, x2, y2, score (a row of the eval cache's ``*_dets``)."""
        return np.concatenate([self.boxes, self.scores.reshape(-1, 1)], axis=1).astype(np.float32)


def _host(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


class Predictor:
    """A model ready for inference on one device (see the module docstring).

    ``model``: an :class:`oimnet.models.OIMNet` (anything with its eval-mode
    ``forward(images, query_boxes=None)`` and ``embed_boxes(images, boxes)``);
    it is moved to ``device`` (default: where its parameters are).
    ``amp``: run under float16 autocast on ``device`` (off by default: no
    config key asks for it at test time, and the published numbers are float32).
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None, *, amp: bool = False):
        if device is None:
            device = next(model.parameters()).device
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.amp = bool(amp)
        self.load_report = None  # from_checkpoint: what loading the checkpoint found

    @classmethod
    def from_checkpoint(
        cls, cfg, path: str, device: torch.device | str, *, checkpoint: Mapping | None = None, amp: bool = False
    ) -> Predictor:
        """The model ``cfg`` describes with ``path``'s weights (ours or the
        authors' release, loaded strictly by
        :func:`oimnet.checkpoint.model_from_checkpoint`; ``checkpoint``: the
        object already read from ``path``). Raises FileNotFoundError or a
        ValueError naming the file and the keys."""
        from oimnet.checkpoint import model_from_checkpoint

        model, report = model_from_checkpoint(cfg, path, checkpoint=checkpoint)
        predictor = cls(model, device, amp=amp)
        predictor.load_report = report
        return predictor

    # ------------------------------------------------------------ images
    @contextmanager
    def _inference(self):
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                yield
        finally:
            self.model.train(was_training)

    def _images(self, images: Sequence[Tensor]) -> list[Tensor]:
        return [img.to(self.device, non_blocking=True) for img in images]

    def _boxes(self, boxes: Sequence) -> list[Tensor]:
        return [torch.as_tensor(b).to(self.device, torch.float32).reshape(-1, 4) for b in boxes]

    def detect(self, images: Sequence[Tensor], query_boxes: Sequence | None = None) -> list[ImageResult]:
        """Detections of each image; ``query_boxes`` (one (1, 4) per image, a
        tensor or array): the query box is detection 0 with score 1 and its
        own embedding, detections overlapping it are suppressed."""
        with self._inference():
            queries = None if query_boxes is None else self._boxes(query_boxes)
            outputs = self.model(self._images(images), query_boxes=queries)
        return [ImageResult(_host(o["boxes"]), _host(o["scores"]), _host(o["embeddings"])) for o in outputs]

    __call__ = detect

    def embed(self, images: Sequence[Tensor], boxes: Sequence) -> list[np.ndarray]:
        """Embeddings float32 (n_i, 256) of the given boxes (n_i, 4) of each image."""
        with self._inference():
            embeddings = self.model.embed_boxes(self._images(images), self._boxes(boxes))
        return [_host(e) for e in embeddings]

    # ------------------------------------------------------------ splits
    def predict_loader(
        self,
        loader: Iterable,
        split: str,
        *,
        indices: Sequence[int] | None = None,
        use_gt: bool = False,
        progress: bool = True,
    ) -> dict[int, ImageResult]:
        """``{record index: ImageResult}`` of every image ``loader`` yields.

        ``loader``: batches ``(images, targets)`` as
        :func:`oimnet.data.build_test_loader` gives them (targets with
        ``boxes`` and ``index``, the item's position in the loader's records).
        ``indices``: the record index (in the whole split) of each of the
        loader's records, when it runs over a subset; the keys are then
        those indices. ``split`` "gallery": detections, or with ``use_gt``
        the target boxes with score 1 embedded from the boxes; "query": each
        image's one target box first (see :meth:`detect`).
        """
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        results: dict[int, ImageResult] = {}
        bar = tqdm(loader, desc=split, ncols=80, leave=False, disable=not progress, file=sys.stderr)
        for images, targets in bar:
            boxes = [t["boxes"] for t in targets]
            if split == "query":
                for t, b in zip(targets, boxes):
                    if len(b) != 1:
                        raise ValueError(
                            f"query image {t.get('img_name', t.get('index'))!r}: expected exactly one query box,"
                            f" got {len(b)}"
                        )
                outputs = self.detect(images, query_boxes=boxes)
            elif use_gt:
                outputs = [
                    ImageResult(_host(torch.as_tensor(b)).reshape(-1, 4), np.ones(len(b), np.float32), e)
                    for b, e in zip(boxes, self.embed(images, boxes))
                ]
            else:
                outputs = self.detect(images)
            for t, out in zip(targets, outputs):
                position = int(t.get("index", len(results)))
                results[int(indices[position]) if indices is not None else position] = out
        return results

    def predict_split(
        self,
        cfg,
        split: str,
        records: Sequence[dict] | None = None,
        indices: Sequence[int] | None = None,
        *,
        use_gt: bool = False,
        progress: bool = True,
    ) -> dict[int, ImageResult]:
        """:meth:`predict_loader` over cfg's test loader of ``split``:
        ``records`` (default: the dataset's test split), or only the records
        at ``indices`` (a shard; the keys are those indices)."""
        from oimnet.data import build_test_loader

        if indices is None:
            loader = build_test_loader(cfg, split, records)
        else:
            if records is None:
                records = build_test_loader(cfg, split).dataset.records
            indices = [int(i) for i in indices]
            loader = build_test_loader(cfg, split, [records[i] for i in indices])
        return self.predict_loader(loader, split, indices=indices, use_gt=use_gt, progress=progress)

    def eval_cache(self, cfg, records: tuple[Sequence[dict], Sequence[dict]] | None = None) -> dict:
        """The eval cache (:func:`eval_cache`) of the test split, or of
        ``records`` = (gallery records, query records), e.g. a validation
        split; ``cfg.EVAL_USE_GT``: the gallery's ground-truth boxes stand for
        its detections."""
        gallery_recs, query_recs = records if records is not None else (None, None)
        gallery = self.predict_split(cfg, "gallery", gallery_recs, use_gt=bool(cfg.EVAL_USE_GT))
        query = self.predict_split(cfg, "query", query_recs)
        return eval_cache(gallery, query)


def eval_cache(gallery: Mapping[int, ImageResult], query: Mapping[int, ImageResult]) -> dict:
    """Per-image results keyed by record index -> the release's eval cache.

    ``gallery`` / ``query``: every record index 0..n-1 of the split exactly
    once (e.g. the union of the shards' results). Cache, one entry per image
    in record order:
      gallery_dets    list of float32 (n, 5): x1, y1, x2, y2 (original pixels), score
      gallery_feats   list of float32 (n, 256)
      query_dets      list of float32 (m, 5): the query image run as a gallery
                      image, the query box first (score 1)
      query_feats     list of float32 (m, 256)
      query_box_feats list of float32 (256,): embedding of each query box
    """
    for name, results in (("gallery", gallery), ("query", query)):
        if sorted(results) != list(range(len(results))):
            missing = sorted(set(range(max(results, default=-1) + 1)) - set(results))
            raise ValueError(
                f"{name} results: expected record indices 0..{len(results) - 1} once each, missing {missing[:10]}"
            )
    g = [gallery[i] for i in range(len(gallery))]
    q = [query[i] for i in range(len(query))]
    return {
        "gallery_dets": [r.detections for r in g],
        "gallery_feats": [r.embeddings for r in g],
        "query_dets": [r.detections for r in q],
        "query_feats": [r.embeddings for r in q],
        "query_box_feats": [r.embeddings[0].copy() for r in q],
    }
