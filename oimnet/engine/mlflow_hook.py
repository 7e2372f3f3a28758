"""The MLflow hook: one MLflow run per training run, ended FINISHED, FAILED or KILLED.

The only engine module that talks to MLflow (through
:mod:`oimnet.engine.tracking`, which imports ``mlflow`` lazily), so a run
without this hook needs no MLflow installed. Main process only.

What it records:
- at the start: the run (continued when the run resumes a checkpoint that
  names one), ``OUTPUT_DIR/mlflow_run_id``; for a new run the flattened
  config as params (the one place a config is flattened), reproducibility
  tags and ``config.yaml``;
- every logging step: the window means (``trainer.step_metrics``); a resumed
  run skips the steps its earlier attempt logged already (they are retrained
  from the last checkpoint with the same losses, and a second point at the
  same step would draw a zigzag in MLflow's charts);
- every epoch: ``trainer.epoch_metrics`` at step = epoch number, and
  ``results.json`` when the epoch was evaluated;
- at the end: ``train.log``, the last checkpoint if MLFLOW.LOG_CHECKPOINT,
  and the end state: FINISHED, KILLED (Ctrl-C, SIGTERM, SystemExit) or FAILED.
"""

from __future__ import annotations

import logging

from oimnet.checkpoint import find_last_checkpoint
from oimnet.engine.device import device_description
from oimnet.engine.hooks import HookBase

log = logging.getLogger("oimnet")

RUN_ID_FILE = "mlflow_run_id"  # in OUTPUT_DIR: the run id, for users and scripts
STEP_KEY = "lr"  # a step metric every logging step has (LoggingHook adds it)


def end_state(exc: BaseException | None) -> str:
    """MLflow end status of a run that raised ``exc`` (None: it finished)."""
    if exc is None:
        return "FINISHED"
    # SystemExit: e.g. Ray stopping a trial when its sweep is interrupted
    return "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"


class MLflowHook(HookBase):
    """Args:
    tracking_uri: the store (None: MLFLOW_TRACKING_URI, else the project's local store).
    parent_run_id: make the run a child of this one (a sweep's parent run).
    tags: extra tags of a new run.
    close_stale: when no checkpoint is resumed, mark a previous attempt's run
        (named in OUTPUT_DIR/mlflow_run_id) KILLED if it is still RUNNING --
        an attempt killed before its first checkpoint cannot close its own run.
    """

    def __init__(self, tracking_uri=None, parent_run_id=None, tags=None, close_stale: bool = False):
        from oimnet.engine.tracking import resolve_tracking_uri

        self.uri = resolve_tracking_uri(tracking_uri)
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.close_stale = close_stale
        self.run = None
        self._exc: BaseException | None = None
        self._logged_through = 0  # step metrics up to this global step are in the run already

    def before_train(self) -> None:
        from oimnet.engine.tracking import RunLogger

        t = self.trainer
        if not t.is_main:
            return
        resume_id = (t.resumed_from or {}).get("mlflow_run_id")
        if self.close_stale and not resume_id:
            self._close_stale_run()
        self.run = RunLogger.start(
            self.uri,
            t.cfg.MLFLOW.EXPERIMENT,
            run_name=t.cfg.MLFLOW.RUN_NAME or t.out_dir.name,
            tags=self.tags,
            parent_run_id=self.parent_run_id,
            resume_run_id=resume_id,
        )
        (t.out_dir / RUN_ID_FILE).write_text(self.run.run_id + "\n")
        t.checkpoint_extras["mlflow_run_id"] = self.run.run_id
        if not resume_id:
            self._log_new_run()
        else:
            self._logged_through = self.run.last_step(STEP_KEY) or 0
        log.info(
            "run %s on %s, seed %d, output %s, MLflow %s",
            self.run.run_id,
            device_description(t.device),
            t.seed,
            t.out_dir,
            self.uri,
        )

    def _log_new_run(self) -> None:
        from oimnet.config import flatten
        from oimnet.engine.tracking import reproducibility_tags

        t = self.trainer
        params = flatten(t.cfg)
        params["SEED_USED"] = t.seed
        self.run.log_params(params)
        self.run.set_tags(reproducibility_tags(device_description(t.device), t.seed))
        self.run.set_tags({"output_dir": str(t.out_dir), "amp": str(t.strategy.amp)})
        self.run.log_artifact(t.out_dir / "config.yaml")

    def _close_stale_run(self) -> None:
        from oimnet.engine.tracking import get_client

        id_file = self.trainer.out_dir / RUN_ID_FILE
        if not id_file.is_file():
            return
        try:
            client = get_client(self.uri)
            run_id = id_file.read_text().strip()
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
                log.info("marked the previous attempt's MLflow run %s KILLED", run_id)
        except Exception as e:  # never block a retry on bookkeeping
            log.warning("could not close the stale MLflow run named in %s: %s", id_file, e)

    def after_step(self) -> None:
        t = self.trainer
        if self.run is not None and t.step_metrics and t.global_step > self._logged_through:
            self.run.log_metrics(t.step_metrics, step=t.global_step)

    def after_epoch(self) -> None:
        if self.run is None:
            return
        t = self.trainer
        self.run.log_metrics(t.epoch_metrics, step=t.epoch + 1)
        if "mAP" in t.epoch_metrics:
            self.run.log_artifact(t.out_dir / "results.json")

    def on_exception(self, exc: BaseException) -> None:
        self._exc = exc
        if self.run is None:
            return
        if end_state(exc) == "KILLED":
            log.error("interrupted: MLflow run %s marked KILLED; resume with --resume", self.run.run_id)
        else:
            log.error(
                "run failed: %s: %s (MLflow run %s marked FAILED; the last checkpoint in %s is intact)",
                type(exc).__name__,
                exc,
                self.run.run_id,
                self.trainer.out_dir,
            )

    def after_train(self) -> None:
        if self.run is None:
            return
        t = self.trainer
        try:
            if self._exc is None:
                final_ckpt = find_last_checkpoint(t.out_dir)
                if t.cfg.MLFLOW.LOG_CHECKPOINT and final_ckpt is not None:
                    self.run.log_artifact(final_ckpt, "checkpoints")
            for h in log.handlers:
                h.flush()
            self.run.log_artifact(t.out_dir / "train.log")
        except Exception as e:  # the end state below must still be written
            log.warning("MLflow: could not log the final artifacts: %s", e)
        finally:
            self.run.end(end_state(self._exc))
