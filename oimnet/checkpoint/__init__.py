"""Checkpoints, in one place: files (atomic writing, finding, reading) and
strict loading of ours and of the authors' release.

- :mod:`oimnet.checkpoint.files`: the training layout, ``save_atomic``,
  ``find_last_checkpoint`` / ``list_checkpoints`` / pruning,
  ``read_checkpoint`` / ``read_state_dict`` (``weights_only=True``).
- :mod:`oimnet.checkpoint.release`: key-by-key strict loading
  (``load_release_state_dict``, ``check_release_state_dict``), what the keys
  reveal (``infer_from_keys``), ``model_from_checkpoint``.
- ``python -m oimnet.checkpoint PATH``: :mod:`oimnet.checkpoint.cli`.
"""

from oimnet.checkpoint.files import (
    ReleaseCheckpointError,
    checkpoint_epoch,
    checkpoint_path,
    find_last_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    read_checkpoint,
    read_state_dict,
    remove_checkpoints_after,
    save_atomic,
    state_dict_of,
)
from oimnet.checkpoint.release import (
    OPTIONAL_KEYS,
    UNUSED_RELEASE_PREFIXES,
    LoadReport,
    build_model_to_load,
    check_release_state_dict,
    infer_from_keys,
    load_release_state_dict,
    model_from_checkpoint,
)


def main(argv: list[str] | None = None) -> int:
    """``python -m oimnet.checkpoint``; see :mod:`oimnet.checkpoint.cli`."""
    from oimnet.checkpoint.cli import main as cli_main

    return cli_main(argv)


__all__ = [
    "ReleaseCheckpointError",
    "checkpoint_epoch",
    "checkpoint_path",
    "find_last_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "read_checkpoint",
    "read_state_dict",
    "remove_checkpoints_after",
    "save_atomic",
    "state_dict_of",
    "OPTIONAL_KEYS",
    "UNUSED_RELEASE_PREFIXES",
    "LoadReport",
    "build_model_to_load",
    "check_release_state_dict",
    "infer_from_keys",
    "load_release_state_dict",
    "model_from_checkpoint",
    "main",
]
