"""Evaluation: detection metrics, CUHK-SYSU/PRW person search, CBGM, eval caches.

Pure functions of (annotation records, detections, features); no model inside,
so a saved eval cache can be re-scored (``python -m oimnet.evaluate``).
"""

from .ap import average_precision
from .api import evaluate_cache
from .cache import CacheError, check_identity, dataset_identity, load_cache, normalize_cache, save_cache
from .detection import detection_metrics
from .results import format_table, write_results_json

__all__ = [
    "evaluate_cache",
    "save_cache",
    "load_cache",
    "normalize_cache",
    "CacheError",
    "dataset_identity",
    "check_identity",
    "detection_metrics",
    "average_precision",
    "write_results_json",
    "format_table",
]
