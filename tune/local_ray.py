"""The local Ray cluster a sweep driver started: recorded, and ended after
the driver died.

``ray.init()`` without an address starts a private cluster (GCS, raylet,
agents, workers) whose processes all carry the cluster's session folder
(``.../session_<date>_<pid>``) on their command line. When the driver is
killed with SIGKILL some of them outlive it for minutes and ignore SIGTERM,
holding CPUs and memory. The driver therefore writes ``local_ray.json`` in
its sweep folder (driver pid and start time, session folder); the next
sweep or ``--resume`` under the same ``--storage`` finds records whose
driver is gone and SIGKILLs the processes of that session that belong to
the current user. A driver that exits normally removes its record.

Linux only (``/proc``); elsewhere nothing is recorded or ended.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

RECORD = "local_ray.json"
_SESSION = re.compile(r"^session_[0-9_\-]+$")


def _start_time(pid: int) -> int | None:
    """Process start time in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def record(exp_dir: str | Path, session_dir: str) -> Path | None:
    """Write the record of this driver's local cluster into exp_dir."""
    if not Path("/proc/self/stat").exists():
        return None
    path = Path(exp_dir) / RECORD
    path.write_text(
        json.dumps(
            {"driver_pid": os.getpid(), "driver_start": _start_time(os.getpid()), "session_dir": str(session_dir)}
        )
        + "\n"
    )
    return path


def forget(exp_dir: str | Path) -> None:
    """Remove this driver's record (normal exit)."""
    path = Path(exp_dir) / RECORD
    try:
        if json.loads(path.read_text()).get("driver_pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def session_pids(session_dir: str) -> list[int]:
    """Pids of the current user's processes whose command line names session_dir."""
    needle = str(session_dir).encode()
    uid, me, out = os.getuid(), os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            if needle in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def end_dead_clusters(storage: str | Path, wait_s: float = 10.0) -> list[str]:
    """SIGKILL what is left of local clusters whose driver died, for every
    record under storage; returns the session folders ended."""
    ended = []
    for path in Path(storage).glob(f"*/{RECORD}"):
        try:
            rec = json.loads(path.read_text())
            pid, started, session = int(rec["driver_pid"]), rec.get("driver_start"), str(rec["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _start_time(pid) is not None and _start_time(pid) == started:
            continue  # that driver is still running
        if not _SESSION.match(Path(session).name):
            continue  # not a Ray session folder: never match arbitrary command lines
        pids = session_pids(session)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.time() + wait_s
        while pids and time.time() < deadline and any(_start_time(p) is not None for p in pids):
            time.sleep(0.1)
        path.unlink(missing_ok=True)
        if pids:
            print(
                f"ended {len(pids)} leftover process(es) of the local Ray cluster {session} "
                f"(its sweep driver, pid {pid}, was killed)",
                flush=True,
            )
            ended.append(session)
    return ended
