"""When a claim on a row is stale: the one rule for stage runs (the runner), run leases and `doctor`.

A claim names the process holding it and carries a proof of life that runs out: a stage run's
heartbeat (stale `STALE_AFTER` after the last beat), a run lease's expiry. A claim is stale when
its process is dead *or* its proof of life has run out.

A pid alone does not name a process: pids are reused, containers restarted under the same host
name count pids from 1 again, and two containers may share a host name. So a claim also records
the kernel's boot id, the PID namespace and the process start time, and "dead" is decided only
where the process can be seen: same host name, same boot, same PID namespace. There a pid that is
gone, or that now belongs to a process started at another time (a reused pid), is dead. Anywhere
else (another host, a rebooted machine, another container sharing the host name) only the proof
of life counts, so a process that cannot be seen is never declared dead while it still beats.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from selfrefine.provenance import host_name, pid_alive
from selfrefine.storage import repository as repo
from selfrefine.storage.schema import Run, StageRun, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = timedelta(seconds=20)
# A running stage run whose heartbeat is this old is stale, whatever its process looks like.
STALE_AFTER = timedelta(minutes=3)


@dataclass(frozen=True)
class ProcessIdentity:
    """What names one process: host name and pid, and where the pid is valid (boot, PID namespace)
    and which process had it (start time). Fields a platform cannot provide are None."""

    host: str | None
    pid: int | None
    boot_id: str | None = None
    pid_ns: str | None = None
    started: int | None = None


@lru_cache(maxsize=1)
def boot_id() -> str | None:
    """This kernel's boot id (changes at every boot), or psutil's boot time where there is no /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return f"boot-time:{int(psutil.boot_time())}"


def pid_namespace() -> str | None:
    """The PID namespace this process sees pids in ('pid:[inode]'); None where there is no /proc."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (/proc/PID/stat field 22), or in
    milliseconds since the epoch from psutil where there is no /proc; None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 2 (the command) is parenthesised and may hold spaces: count from after it.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process(pid).create_time() * 1000)
    except Exception:  # noqa: BLE001 - no psutil, no such process, no permission: unknown
        return None


def current_process() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(host_name(), pid, boot_id(), pid_namespace(), process_start(pid))


def is_dead(proc: ProcessIdentity) -> bool:
    """Whether `proc` is known, from here, to be dead; False when it cannot be seen from here."""
    if proc.pid is None or proc.host != host_name():
        return False
    here_boot, here_ns = boot_id(), pid_namespace()
    if proc.boot_id and here_boot and proc.boot_id != here_boot:
        return False  # same host name, another kernel: a rebooted machine or another machine
    if proc.pid_ns and here_ns and proc.pid_ns != here_ns:
        return False  # another container sharing the host name: its pids are not ours
    if not pid_alive(proc.pid):
        return True
    if proc.started is None:
        return False
    started = process_start(proc.pid)
    return started is not None and started != proc.started  # the pid now names another process


def _aware(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; the store writes UTC.
    return ts.replace(tzinfo=timezone.utc) if ts is not None and ts.tzinfo is None else ts


def is_stale(proc: ProcessIdentity, alive_until: datetime | None, now: datetime | None = None) -> bool:
    """The rule: a claim is stale when its proof of life ran out (or it has none) or its process is dead."""
    alive_until = _aware(alive_until)
    return alive_until is None or (now or utcnow()) > alive_until or is_dead(proc)


# -- stage runs ----------------------------------------------------------------------------------


def stage_run_process(row: StageRun) -> ProcessIdentity:
    return ProcessIdentity(row.host, row.pid, row.boot_id, row.pid_ns, row.pid_start)


def stage_run_is_stale(row: StageRun, now: datetime | None = None) -> bool:
    """Whether a `running` stage run's process is gone: dead where it can be seen, or silent."""
    beat = _aware(row.heartbeat_at)
    return is_stale(stage_run_process(row), beat + STALE_AFTER if beat else None, now)


def claim_fields(proc: ProcessIdentity | None = None) -> dict:
    """The stage run columns that name the claiming process (this one by default)."""
    proc = proc or current_process()
    return {"host": proc.host, "pid": proc.pid, "boot_id": proc.boot_id, "pid_ns": proc.pid_ns,
            "pid_start": proc.started}


# -- run leases ----------------------------------------------------------------------------------


def lease_holder(run: Run) -> ProcessIdentity | None:
    if not run.lease_owner:
        return None
    host, _, rest = run.lease_owner.partition(":")
    pid = rest.split(":", 1)[0]
    return ProcessIdentity(host, int(pid) if pid.isdigit() else None, run.lease_boot_id,
                           run.lease_pid_ns, run.lease_pid_start)


def lease_is_live(run: Run, now: datetime | None = None) -> bool:
    """Whether a live process (as far as can be told from here) holds the run's lease."""
    holder = lease_holder(run)
    return holder is not None and not is_stale(holder, run.lease_expires_at, now)


def lease_holder_is_dead(run: Run) -> bool:
    """Whether the lease's holder is known to be dead (its lease is void before it expires)."""
    holder = lease_holder(run)
    return holder is not None and is_dead(holder)


class Heartbeat:
    """Refreshes a stage run's heartbeat from a daemon thread while its claim (row, attempt) holds.
    A beat that finds the row no longer ours (taken over as stale) stops beating; `_register`
    then refuses to complete the row."""

    def __init__(self, store, row_id: uuid.UUID, attempt: int):
        self._store, self._row_id, self._attempt = store, row_id, attempt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{row_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL.total_seconds()):
            try:
                with self._store.session() as s:
                    if not repo.touch_heartbeat(s, self._row_id, self._attempt):
                        log.error("stage run %s was taken over by another process; this one's "
                                  "outputs will not be registered", self._row_id)
                        return
            except Exception:
                log.warning("heartbeat for stage run %s failed", self._row_id, exc_info=True)
