import os
import subprocess
import sys
from pathlib import Path

import pytest

from oimnet.config import load_config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


SMOKE_CFG = ROOT / "experiments" / "synthetic.yaml"


def _last_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted(out_dir.glob("epoch_*.pth"))
    return ckpts[-1] if ckpts else None


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(config, checkpoint path) of a smoke-trained model on the synthetic set."""
    reuse = os.environ.get("OIMNET_SMOKE_OUTPUT")
    if reuse:
        out = Path(reuse)
        ckpt = _last_checkpoint(out)
        if ckpt is None or not (out / "config.yaml").is_file():
            pytest.fail(f"OIMNET_SMOKE_OUTPUT={reuse}: expected config.yaml and epoch_XXX.pth there")
        return load_config(str(out / "config.yaml"), ["DEVICE", "cpu"]), ckpt
    work = tmp_path_factory.mktemp("smoke")
    out, data = work / "out", work / "data"
    cmd = [
        sys.executable,
        "-m",
        "oimnet.train",
        "--cfg",
        str(SMOKE_CFG),
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "OUTPUT_DIR",
        str(out),
        "INPUT.DATA_ROOT",
        str(data),
        "DEVICE",
        "cpu",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    ckpt = _last_checkpoint(out)
    if proc.returncode != 0 or ckpt is None:
        pytest.fail(f"smoke training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return load_config(str(out / "config.yaml"), ["DEVICE", "cpu"]), ckpt
