"""Create and migrate a local MLflow store once, under a file lock.

MLflow creates (and migrates) a sqlite store's schema the first time a
process opens it. Several processes opening a new store at once (trainings
started together, Ray trials) race that migration: one of them fails with
"duplicate column" or an alembic error, and the database can be left
half-migrated for every later run. ``prepare_store`` lets one process at a
time open the store (``<db>.lock``, a ``filelock`` lock next to the
database), so the schema is created exactly once; later opens find it
ready. Other stores (a tracking server, Databricks) are left alone.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["LOCK_TIMEOUT_S", "StoreError", "prepare_store", "sqlite_path"]

LOCK_TIMEOUT_S = 600.0
_READY: set[str] = set()  # URIs prepared by this process


class StoreError(ValueError):
    """The MLflow store cannot be opened; the message names it (a ValueError,
    so the CLIs report it as bad input)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def prepare_store(uri: str) -> None:
    """Make sure the store at ``uri`` (absolute) exists with MLflow's current
    schema before any run uses it. Only sqlite stores need it; each URI is
    prepared once per process. Raises StoreError when the file is not an
    MLflow database or the lock is not released within LOCK_TIMEOUT_S."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        folder = Path(unquote(urlparse(uri).path))
        if folder.exists() and not folder.is_dir():
            hint = f" (a database? use sqlite:///{folder})" if folder.suffix == ".db" else ""
            raise StoreError(f"MLflow store {folder}: a file, not a store folder or sqlite:/// database{hint}")
        return
    db = sqlite_path(uri)
    if db is None or uri in _READY:
        return
    from mlflow.tracking import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{db}.lock", timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Timeout as exc:
        raise StoreError(
            f"MLflow store {db}: another process held {lock.lock_file} for over {LOCK_TIMEOUT_S:.0f} s"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - sqlalchemy / alembic / sqlite errors, re-raised by name
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise StoreError(
            f"MLflow store {db}: cannot be opened as an MLflow sqlite database "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
        ) from exc
    _READY.add(uri)
