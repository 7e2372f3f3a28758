"""The CPU smoke profile learns: the trained model searches far better than the untrained one."""

import json
from pathlib import Path

import pytest
import torch

from oimnet.engine.evaluation import evaluate_model
from oimnet.engine.seeding import seed_everything
from oimnet.models import build_model

pytestmark = pytest.mark.slow


@pytest.mark.timeout(3600)
def test_smoke_training_beats_the_untrained_model(smoke_run, tmp_path):
    cfg, ckpt = smoke_run
    trained = json.loads((Path(ckpt).parent / "results.json").read_text())
    seed_everything(int(cfg.SEED))
    untrained = evaluate_model(build_model(cfg), cfg, torch.device("cpu"), tmp_path, tag="untrained")
    print(
        f"untrained mAP {untrained['mAP']:.4f} top1 {untrained['top1']:.3f} det_ap {untrained['det_ap']:.3f}; "
        f"trained mAP {trained['mAP']:.4f} top1 {trained['top1']:.3f} det_ap {trained['det_ap']:.3f}"
    )
    assert trained["mAP"] >= 2 * untrained["mAP"] and trained["mAP"] >= 0.05
    assert trained["det_ap"] >= 2 * untrained["det_ap"]
    assert trained["top1"] > untrained["top1"]
