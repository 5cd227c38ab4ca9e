"""The run lease: at most one process drives a run at a time.

The lease is a row-level claim (`runs.lease_owner`, `runs.lease_expires_at`) taken with one
conditional UPDATE and renewed by a heartbeat thread. A lease whose owner process is dead (same
host) or whose expiry has passed (any host) is free, so a killed run can be resumed at once on
the machine it died on, and after `LEASE_TTL` elsewhere.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import update

from selfrefine.errors import LeaseHeldError
from selfrefine.provenance import host_name, pid_alive
from selfrefine.storage import repository as repo
from selfrefine.storage.engine import Store
from selfrefine.storage.schema import Run

LEASE_TTL = timedelta(seconds=90)
RENEW_EVERY = timedelta(seconds=20)
log = logging.getLogger(__name__)


def _owner_is_dead_here(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    return host == host_name() and pid.isdigit() and not pid_alive(int(pid))


class RunLease:
    """Context manager holding a run's lease for this process; raises `LeaseHeldError` if taken."""

    def __init__(self, store: Store, run_id: uuid.UUID):
        self.store, self.run_id = store, run_id
        self.owner = f"{host_name()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{run_id}")

    @staticmethod
    def check_free(store: Store, run_id: uuid.UUID) -> None:
        """Raise `LeaseHeldError` if a live process holds the run's lease (a read-only check;
        taking the lease in `__enter__` is what actually excludes a second driver)."""
        with store.session() as s:
            run = s.get_one(Run, run_id)
            owner, expires = run.lease_owner, run.lease_expires_at
        if owner is None or _owner_is_dead_here(owner):
            return
        if expires is not None:
            expires = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
            if expires < datetime.now(timezone.utc):
                return
        raise LeaseHeldError(f"run {run_id} is being driven by {owner} (lease until "
                             f"{repo.ago(expires)} UTC); wait for it to finish or stop it first")

    def __enter__(self) -> RunLease:
        with self.store.session() as s:
            current = s.get_one(Run, self.run_id)
            if _owner_is_dead_here(current.lease_owner):
                # The previous driver died on this machine: its lease is void now, not after the TTL.
                s.execute(update(Run).where(Run.id == self.run_id, Run.lease_owner == current.lease_owner)
                          .values(lease_owner=None, lease_expires_at=None))
            if not repo.acquire_run_lease(s, self.run_id, self.owner, LEASE_TTL):
                holder = s.get_one(Run, self.run_id, populate_existing=True)  # as the UPDATE saw it
                raise LeaseHeldError(
                    f"run {self.run_id} is being driven by {holder.lease_owner} (lease until "
                    f"{repo.ago(holder.lease_expires_at)} UTC); wait for it to finish or stop it first")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self.store.session() as s:
            repo.release_run_lease(s, self.run_id, self.owner)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY.total_seconds()):
            try:
                with self.store.session() as s:
                    if not repo.acquire_run_lease(s, self.run_id, self.owner, LEASE_TTL):
                        log.error("lost the lease of run %s", self.run_id)
            except Exception:
                log.warning("renewing the lease of run %s failed", self.run_id, exc_info=True)
