"""benchmarks/gpu_check.py, the prepared check for a lent GPU machine, runs its CPU quick mode end to end.

It runs in a subprocess in which Ray, MLflow and Optuna cannot be imported,
as on the GPU machine (which has torch, torchvision, numpy, scipy, pillow,
matplotlib, tqdm, pandas and pyyaml, and OmegaConf only as the copy the
script's --vendor option makes).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_GPU_MACHINE = ("ray", "mlflow", "optuna", "sklearn", "pytest")

BOOTSTRAP = f"""
import runpy, sys
for name in {ABSENT_ON_THE_GPU_MACHINE!r}:
    sys.modules[name] = None  # `import name` raises ImportError; find_spec(name) says absent
sys.argv = ["gpu_check.py"] + sys.argv[1:]
runpy.run_path({str(ROOT / "benchmarks" / "gpu_check.py")!r}, run_name="__main__")
"""


def test_gpu_check_cpu_quick_runs_every_section(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, "--device", "cpu", "--quick", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((out / "gpu_check.json").read_text())
    sections = result["sections"]
    assert set(sections) == {"train_step", "inference", "kernels", "end_to_end"}
    assert not [name for name, r in sections.items() if "error" in r]
    for variant in ("OIMNet", "OIMNet++", "OIMNet+++"):
        r = sections["train_step"][variant]
        assert r["finite"] and r["step_s_median"] > 0 and r["images_per_s"] > 0
        assert r["max_rel_diff_amp"] < 0.05  # float16 autocast forward vs float32 on the same batch
        assert set(r["losses_amp"]) == set(r["losses_float32"])
    assert all(sections["inference"][k]["images_per_s"] > 0 for k in ("batch1", "batch4"))
    assert all(r["agree"] for r in sections["kernels"].values()), sections["kernels"]
    e2e = sections["end_to_end"]
    assert e2e["ok"] and e2e["checkpoints_after_interruption"] == ["epoch_001.pth"], e2e
    assert e2e["resumed_to_epoch"] == 2 and "mAP" in e2e["metrics"]
    table = (out / "gpu_check.md").read_text()
    assert "| OIMNet+++ |" in table and "| protonorm2d |" in table and "ok=True" in table
