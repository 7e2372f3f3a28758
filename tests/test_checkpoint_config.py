"""--resume's changed-key check: what may change between attempts and what may not."""

import pytest

from oimnet.checkpoint_config import ConfigMismatchError, check_resume_config
from oimnet.config import load_config, to_yaml


def _state(**overrides):
    return {"config": to_yaml(load_config(None, overrides))}


def test_worker_count_may_change_when_the_global_batch_stays():
    saved = _state(**{"SOLVER.WORLD_SIZE": 2, "INPUT.BATCH_SIZE_TRAIN": 2})
    check_resume_config(load_config(None, {"SOLVER.WORLD_SIZE": 1, "INPUT.BATCH_SIZE_TRAIN": 4}), saved, "ckpt.pth")
    check_resume_config(
        load_config(None, {"SOLVER.WORLD_SIZE": 1, "INPUT.BATCH_SIZE_TRAIN": 4, "SOLVER.KEYED_SAMPLING": True}),
        saved,
        "ckpt.pth",
    )


def test_a_changed_global_batch_or_loss_is_refused_with_the_keys_named():
    saved = _state(**{"SOLVER.WORLD_SIZE": 2, "INPUT.BATCH_SIZE_TRAIN": 2})
    with pytest.raises(ConfigMismatchError, match=r"global batch .*: 4 in the checkpoint, 2 now"):
        check_resume_config(load_config(None, {"SOLVER.WORLD_SIZE": 1, "INPUT.BATCH_SIZE_TRAIN": 2}), saved, "c.pth")
    with pytest.raises(ConfigMismatchError, match="MODEL.LOSS.TYPE"):
        check_resume_config(
            load_config(None, {"SOLVER.WORLD_SIZE": 2, "INPUT.BATCH_SIZE_TRAIN": 2, "MODEL.LOSS.TYPE": "LOIM"}),
            _state(**{"SOLVER.WORLD_SIZE": 2, "INPUT.BATCH_SIZE_TRAIN": 2, "MODEL.LOSS.TYPE": "OIM"}),
            "c.pth",
        )
