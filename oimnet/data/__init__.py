"""Datasets: CUHK-SYSU and PRW read from untouched downloads, a synthetic
world in the same formats, transforms and detection DataLoaders.

See docs/interfaces.md ("Annotations") for the record dict and loader batches.
The loader names are imported lazily so that the command-line tools
(``python -m oimnet.data.check`` / ``.synth``) start without torch.
"""

from oimnet.constants import UNLABELED_PID

from .datasets import load_cuhk_protocol, load_records, num_train_ids, parse_stats
from .records import DatasetError
from .synth import ensure_synthetic

_LOADER_NAMES = ("build_train_loader", "build_test_loader", "collate", "EpochBatchSampler")

__all__ = [
    "load_records",
    "load_cuhk_protocol",
    "num_train_ids",
    "parse_stats",
    "build_train_loader",
    "build_test_loader",
    "collate",
    "EpochBatchSampler",
    "ensure_synthetic",
    "DatasetError",
    "UNLABELED_PID",
]


def __getattr__(name):
    if name in _LOADER_NAMES:
        from . import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'oimnet.data' has no attribute {name!r}")
