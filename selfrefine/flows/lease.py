"""The run lease: at most one process drives a run at a time.

The lease is a row-level claim (`runs.lease_owner`, `runs.lease_expires_at`, and what names the
owner's process) taken with one conditional UPDATE and renewed by a thread. It is free when its
holder is stale by the rule in `storage/liveness.py` (the one `doctor` and the stage runner use):
dead, seen from the same host, boot and PID namespace, or past its expiry. So a killed run can be
resumed at once on the machine it died on, and after `LEASE_TTL` elsewhere.

A driver that loses its lease (it could not renew in time and another process took the run)
stops at its next stage boundary: `dispatch_stage` calls `require_lease` before every stage,
which renews the lease or raises `LeaseHeldError`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta

from sqlalchemy import select

from selfrefine.errors import LeaseHeldError
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.liveness import current_process, lease_holder_is_dead, lease_is_live
from selfrefine.storage.schema import Iteration, Run

LEASE_TTL = timedelta(seconds=90)
RENEW_EVERY = timedelta(seconds=20)
log = logging.getLogger(__name__)

# The leases this process holds, by run id: what `require_lease` checks at a stage boundary.
_held: dict[uuid.UUID, RunLease] = {}
_held_lock = threading.Lock()


def _held_by(holder: Run) -> str:
    return f"{holder.lease_owner} (lease until {repo.ago(holder.lease_expires_at)} UTC)"


class RunLease:
    """Context manager holding a run's lease for this process; raises `LeaseHeldError` if taken."""

    def __init__(self, store: Store, run_id: uuid.UUID):
        self.store, self.run_id = store, run_id
        proc = current_process()
        self.owner = f"{proc.host}:{proc.pid}:{uuid.uuid4().hex[:8]}"
        self._process = {"boot_id": proc.boot_id, "pid_ns": proc.pid_ns, "started": proc.started}
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{run_id}")

    @staticmethod
    def check_free(store: Store, run_id: uuid.UUID) -> None:
        """Raise `LeaseHeldError` if a live process holds the run's lease (a read-only check;
        taking the lease in `__enter__` is what actually excludes a second driver)."""
        with store.session() as s:
            run = s.get_one(Run, run_id)
            if not lease_is_live(run):
                return
            held_by = _held_by(run)
        raise LeaseHeldError(f"run {run_id} is being driven by {held_by}; wait for it to finish "
                             "or stop it first")

    def __enter__(self) -> RunLease:
        with self.store.session() as s:
            current = s.get_one(Run, self.run_id)
            if lease_holder_is_dead(current):
                # The previous driver died on this machine: its lease is void now, not after the TTL.
                repo.release_run_lease(s, self.run_id, current.lease_owner)
            if not repo.acquire_run_lease(s, self.run_id, self.owner, LEASE_TTL, self._process):
                holder = s.get_one(Run, self.run_id, populate_existing=True)  # as the UPDATE saw it
                raise LeaseHeldError(f"run {self.run_id} is being driven by {_held_by(holder)}; "
                                     "wait for it to finish or stop it first")
        with _held_lock:
            _held[self.run_id] = self
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with _held_lock:
            if _held.get(self.run_id) is self:
                del _held[self.run_id]
        self._stop.set()
        self._thread.join(timeout=5)
        with self.store.session() as s:
            repo.release_run_lease(s, self.run_id, self.owner)

    def confirm(self) -> None:
        """Renew the lease now; raise `LeaseHeldError` if another process has taken it since."""
        if not self.lost.is_set():
            with self.store.session() as s:
                if repo.renew_run_lease(s, self.run_id, self.owner, LEASE_TTL):
                    return
            self.lost.set()
        with self.store.session() as s:
            holder = _held_by(s.get_one(Run, self.run_id))
        raise LeaseHeldError(
            f"run {self.run_id}: this process ({self.owner}) lost the run's lease (now held by "
            f"{holder}) and stops here, before its next stage; the new holder drives the run")

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY.total_seconds()):
            try:
                with self.store.session() as s:
                    renewed = repo.renew_run_lease(s, self.run_id, self.owner, LEASE_TTL)
            except Exception:
                log.warning("renewing the lease of run %s failed", self.run_id, exc_info=True)
                continue
            if not renewed:
                # Taken by another process; never taken back. The driver stops at its next stage.
                self.lost.set()
                log.error("lost the lease of run %s; stopping before the next stage", self.run_id)
                return


def require_lease(iteration_id: uuid.UUID | None) -> None:
    """At a stage boundary: if this process drives the iteration's run, renew the run's lease or
    raise `LeaseHeldError` (the lease was lost). A process driving no run (a pool worker, a
    standalone stage) has nothing to check."""
    with _held_lock:
        leases = list(_held.values())
    if iteration_id is None:
        return
    for lease in leases:
        with lease.store.session() as s:
            run_id = s.scalar(select(Iteration.run_id).where(Iteration.id == iteration_id))
        if run_id == lease.run_id:
            lease.confirm()
            return
