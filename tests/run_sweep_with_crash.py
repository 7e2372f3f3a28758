"""`python tune/run_ablation.py ARGS`, with every trial crashing once after epoch 1.

Run by tests/test_tune_sweep.py (``python -m tests.run_sweep_with_crash ARGS``
from the project root): the failure is a training hook given to the sweep,
pickled by value to the Ray workers.
"""

from __future__ import annotations

import sys

import ray.cloudpickle

from tests import fault_hooks
from tune.run_ablation import main

if __name__ == "__main__":
    ray.cloudpickle.register_pickle_by_value(fault_hooks)
    sys.exit(main(sys.argv[1:], hook_factories=(fault_hooks.CrashOnceAfterEpoch.factory(1),)))
