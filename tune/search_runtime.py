"""The Ray Tune pieces of a searched sweep (imported only when a grid has ``search:``).

Both live at module level so that Tune can save them with the experiment and
``--resume`` brings them back.
"""

from __future__ import annotations

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from tune.search import mark_stopped


class OptunaOnEvalEpochs(OptunaSearch):
    """Optuna's sampler through Tune, fed only the results that carry the metric.

    Trials report every epoch (each epoch's checkpoint goes with it), but the
    validation metric exists only at evaluation epochs; Tune's OptunaSearch
    would fail on the other reports.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)


class EarlyStopToMlflow(Callback):
    """When the scheduler stops a trial, end its MLflow child run FINISHED with ``stopped_early``.

    Tune marks the result it stops a trial on ``done`` before the callbacks
    see it; a trial that ends by itself never has ``done`` on an epoch below
    the budget. Ray then stops the trial's process abruptly (the trainer may
    mark its own run KILLED on the way out), so the tagged runs are closed
    again once fit() returns (``close_stopped_runs``).
    """

    def __init__(self, tracking_uri: str, parent_run_id: str, max_epochs: int):
        self.tracking_uri, self.parent_run_id = tracking_uri, parent_run_id
        self.max_epochs = int(max_epochs)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = int(result.get("epoch", 0) or 0)
        if result.get("done") and 0 < epoch < self.max_epochs:
            try:
                mark_stopped(self.tracking_uri, self.parent_run_id, str(trial), epoch)
            except Exception as e:  # bookkeeping must not end the sweep
                print(f"[tune] could not mark the MLflow run of {trial} stopped: {e}", flush=True)
