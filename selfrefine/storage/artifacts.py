"""Content-addressed artifact store: files and directories kept under their sha256.

Layout under the root (a local directory or an fsspec URL such as `s3://bucket/selfrefine`):

    objects/<2 hex>/<64 hex>    a stored file or directory, named by its digest
    staging/<uuid>/             where a stage writes its outputs before they are stored

Writes are atomic: a stage writes into a staging directory, the store digests it and then
renames (locally) or uploads (remote) it to its object key. Only after that does the caller
register the artifact in the SQL store, in one transaction. A crash therefore leaves at most an
unregistered staging or object path (found by `doctor`), never a registered artifact without
its bytes. Keys are validated, so no path from config or data can leave the root. A remote
object also gets a manifest written last and is read back before being reused; downloads are
cached locally and checked against their digest (see `remote_artifacts`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fsspec
from fsspec.implementations.dirfs import DirFileSystem

from selfrefine import settings
from selfrefine.errors import ArtifactIntegrityError, PathEscapeError, StoreError
from selfrefine.storage.digests import digest_entries, digest_path, path_entries

log = logging.getLogger(__name__)

_KEY = re.compile(r"^objects/[0-9a-f]{2}/[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size_bytes: int
    is_dir: bool


def key_for(sha256: str) -> str:
    return f"objects/{sha256[:2]}/{sha256}"


class ArtifactStore:
    """Stores outputs by digest under `root` (default `settings.artifact_root()`)."""

    def __init__(self, root: str | None = None):
        self.root_url = root or settings.artifact_root()
        self.fs, self._root = fsspec.core.url_to_fs(self.root_url)
        self.is_local = "file" in _protocols(self.fs)
        if self.is_local:
            self._root = str(Path(self._root).resolve())
            Path(self._root, "objects").mkdir(parents=True, exist_ok=True)
            Path(self._root, "staging").mkdir(parents=True, exist_ok=True)
        else:
            # Imported here because the remote module builds on this one's digests.
            from selfrefine.storage.remote_artifacts import RemoteObjects

            if isinstance(self.fs, DirFileSystem):
                # A "dir::" URL's path is the wrapper's own root: paths inside it are relative to it.
                self._root = ""
            self._remote = RemoteObjects(self.fs, self._root, settings.home() / "artifact-cache")

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh local directory for a stage's outputs; removed afterwards whatever happens.

        Local stores stage inside the root so that storing is a same-filesystem rename. The
        directory is flock-ed while in use: the kernel drops the lock when its process dies, even
        by SIGKILL, which is how `doctor` tells a live stage's directory from a dead one's.
        """
        parent = Path(self._root, "staging") if self.is_local else None
        path, fd = _locked_tempdir(parent)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)

    def put(self, path: Path) -> StoredObject:
        """Digest `path` and move (local) or upload (remote) it to its content address."""
        path = Path(path)
        is_dir, entries = path_entries(path)
        sha, size = digest_entries(is_dir, entries)
        key = key_for(sha)
        if self.is_local:
            dest = self.local_path(key)
            if dest.exists() and digest_path(dest)[0] != sha:
                # The stored copy was altered after it was written: replace it with the good bytes.
                log.warning("replacing altered object %s", key)
                _remove(dest)
            if dest.exists():
                # Same digest = same bytes: keep the stored copy.
                _remove(path)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(path, dest)
                except OSError:
                    if not dest.exists():
                        raise
                    # Another process stored the identical object first: drop our copy.
                    _remove(path)
        else:
            self._remote.put(path, key, is_dir, entries)
        return StoredObject(key=key, sha256=sha, size_bytes=size, is_dir=is_dir)

    # -- reading ---------------------------------------------------------------------------

    def _join(self, key: str) -> str:
        return f"{self._root.rstrip('/')}/{key}" if self._root else key

    def check_key(self, key: str) -> str:
        if not _KEY.match(key or ""):
            raise PathEscapeError(f"artifact key {key!r} is not of the form objects/xx/<sha256>")
        return key

    def local_path(self, key: str) -> Path:
        """Where the object lives on this machine (remote objects are downloaded to a cache)."""
        self.check_key(key)
        if self.is_local:
            path = Path(self._root, key).resolve()
            if not path.is_relative_to(self._root):
                raise PathEscapeError(f"artifact key {key!r} leaves the store root {self._root}")
            return path
        return self._remote.local_path(key)

    def exists(self, key: str) -> bool:
        self.check_key(key)
        return self.local_path(key).exists() if self.is_local else self.fs.exists(self._join(key))

    def verify(self, key: str, sha256: str) -> None:
        """Raise `ArtifactIntegrityError` unless the object exists and still has digest `sha256`."""
        if self.is_local:
            path = self.local_path(key)
            if not path.exists():
                raise ArtifactIntegrityError(f"artifact {sha256[:12]} is registered but its file {path} is missing")
            actual, _ = digest_path(path)
        else:
            remote = self._join(self.check_key(key))
            if not self.fs.exists(remote):
                raise ArtifactIntegrityError(
                    f"artifact {sha256[:12]} is registered but its remote object {remote} is missing")
            # The cached copy is checked against the key's digest (and fetched again if it differs).
            path, actual = self._remote.local_path(key), key.rsplit("/", 1)[1]
        if actual != sha256:
            raise ArtifactIntegrityError(
                f"artifact {sha256[:12]} at {path} was altered (digest now {actual[:12]})")

    # -- housekeeping ----------------------------------------------------------------------

    def stored_keys(self) -> set[str]:
        """Every object key present under the root (for `doctor`)."""
        base = self._join("objects")
        if not self.fs.exists(base):
            return set()
        keys = set()
        for prefix in self.fs.ls(base, detail=False):
            for obj in self.fs.ls(prefix, detail=False):
                key = "objects/" + "/".join(obj.rstrip("/").split("/")[-2:])
                if _KEY.match(key):
                    keys.add(key)
        return keys

    def staging_paths(self) -> list[str]:
        base = self._join("staging")
        return sorted(self.fs.ls(base, detail=False)) if self.fs.exists(base) else []

    def abandoned_staging(self) -> list[Path]:
        """Local staging directories whose process is gone (nobody holds their lock)."""
        if not self.is_local:
            return []
        return [p for p in map(Path, self.staging_paths()) if not _in_use(p)]

    def remove_abandoned(self, path: Path) -> bool:
        """Remove a staging directory if no live process holds it; whether it was removed.

        The lock is held while removing, so a process cannot start using the directory meanwhile.
        """
        path = Path(path)
        if not self.is_local or path.parent != Path(self._root, "staging"):
            raise PathEscapeError(f"{path} is not a staging directory of the store at {self._root}")
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if not _try_lock(fd):
                return False
            _remove(path) if path.is_dir() else path.unlink()
            return True
        finally:
            os.close(fd)


def _locked_tempdir(parent: Path | None) -> tuple[Path, int]:
    """mkdtemp + an exclusive flock on the directory; (path, fd holding the lock)."""
    while True:
        path = Path(tempfile.mkdtemp(prefix=f"{uuid.uuid4().hex}-", dir=parent))
        fd = os.open(path, os.O_RDONLY)
        try:
            # Blocks only while `doctor --fix` holds the lock to remove this fresh, empty directory.
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without locks: stage anyway; doctor then treats it as in use
            return path, fd
        if os.fstat(fd).st_nlink > 0:
            return path, fd
        os.close(fd)  # removed between mkdtemp and our lock: take another


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # held by a live process (or locks are unsupported: assume it is in use)
        return False


def _in_use(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True  # gone already: nothing to report
    try:
        return not _try_lock(fd)  # the lock is released with the descriptor below
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
