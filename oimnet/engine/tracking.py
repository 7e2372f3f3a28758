"""MLflow tracking: where the store is, run life cycle, batched logging.

Everything goes through ``MlflowClient`` with explicit run ids (no fluent
global "active run"), so the same code works in a plain process, inside a Ray
trial, and for nested child runs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_dir() -> Path:
    """The source checkout when running from one, else the current directory."""
    if (PROJECT_ROOT / "pyproject.toml").exists():
        return PROJECT_ROOT
    return Path.cwd()


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Absolute tracking URI: the argument, else MLFLOW_TRACKING_URI, else
    ``sqlite:///<project>/mlruns/mlflow.db``.

    MLflow's own default is relative to the current directory, which differs
    inside a Ray trial; resolving once and passing the result on avoids
    silently writing to another database.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        store = project_dir() / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{store / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        return f"sqlite:///{Path(rel).resolve()}"
    if "://" not in uri:  # a plain directory path
        return Path(uri).resolve().as_uri()
    return uri


def _artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments of a local store (absolute), else None."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "artifacts").as_uri()
    return None


def get_client(uri: str | None = None):
    """A client of the resolved store; a new sqlite store is created and
    migrated once, under a file lock (oimnet.tracking_store)."""
    from mlflow.tracking import MlflowClient

    from oimnet.tracking_store import prepare_store

    uri = resolve_tracking_uri(uri)
    prepare_store(uri)
    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_root(client.tracking_uri))
    except Exception:  # created concurrently by another trial
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_commit(path: Path | None = None) -> str:
    """HEAD of the checkout (with '-dirty' when files differ), or 'unknown'."""
    path = path or project_dir()
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if not head:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "numpy", "scipy", "ray", "mlflow", "omegaconf", "oimnet"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def reproducibility_tags(device_text: str, seed: int) -> dict[str, str]:
    """What reproduces a run: commit, versions, device, seed, host, command."""
    tags = {
        "git_commit": git_commit(),
        "device": device_text,
        "seed": str(seed),
        "host": platform.node(),
        "command": " ".join(sys.argv)[:4000],
    }
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


class RunLogger:
    """One MLflow run, logged in batches (the sqlite store costs ~40 ms per call)."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self._pending: list = []

    @classmethod
    def start(
        cls,
        uri: str | None,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> RunLogger:
        client = get_client(uri)
        if resume_run_id:
            client.update_run(resume_run_id, status="RUNNING")
            return cls(client, resume_run_id)
        exp_id = get_or_create_experiment(client, experiment)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp_id, run_name=run_name or None, tags=all_tags)
        return cls(client, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int, flush: bool = True) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                value = float(v)
            except (TypeError, ValueError):
                continue
            self._pending.append(Metric(k, value, ts, int(step)))
        if flush:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)

    def last_step(self, key: str) -> int | None:
        """The largest step at which metric ``key`` was logged to this run (None: never)."""
        history = self.client.get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=None)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """status: FINISHED, FAILED or KILLED. Never raises (it runs on the way out)."""
        try:
            self.flush()
        except Exception:
            pass
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as e:  # pragma: no cover - store unreachable
            print(f"warning: could not mark MLflow run {self.run_id} {status}: {e}", file=sys.stderr)
