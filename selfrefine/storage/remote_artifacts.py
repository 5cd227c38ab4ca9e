"""Remote objects of the artifact store (fsspec URLs): verified uploads and a verified local cache.

Beside each remote object `objects/<2 hex>/<sha256>` (a file or a directory) lies its manifest
`objects/<2 hex>/<sha256>.manifest.json`: every entry's relative path and each file's size and
sha256, in the order the object's digest covers them. The manifest is written last, once the
object is complete under its final name, so it marks a finished upload; its entries reproduce the
object's digest, so it cannot describe other bytes than the key names.

An existing remote object is trusted only after its files are read back and match the manifest of
the bytes being stored; otherwise it is replaced. Downloads go to a unique temporary path, are
checked against the key's digest and then renamed into the cache, under a per-object lock; a
cached copy is checked again before each use and downloaded afresh when it no longer matches.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import fsspec

from selfrefine.errors import ArtifactIntegrityError, StoreError
from selfrefine.storage.digests import Entry, digest_entries, digest_path

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
_FORMAT = "selfrefine-manifest-v1"
_CHUNK = 1 << 20


def manifest(is_dir: bool, entries: list[Entry]) -> dict:
    sha, size = digest_entries(is_dir, entries)
    return {"format": _FORMAT, "sha256": sha, "size_bytes": size, "is_dir": is_dir,
            "entries": [{"path": e.path, "type": "directory"} if e.sha256 is None else
                        {"path": e.path, "type": "file", "size": e.size, "sha256": e.sha256}
                        for e in entries]}


def _parse_manifest(data: bytes, sha: str) -> tuple[bool, list[Entry]] | None:
    """(is_dir, entries) of a manifest that describes the object `sha`, else None."""
    try:
        doc = json.loads(data)
        if doc.get("format") != _FORMAT:
            return None
        is_dir = doc["is_dir"] is True
        entries = [Entry(e["path"]) if e["type"] == "directory" else
                   Entry(e["path"], str(e["sha256"]), int(e["size"])) for e in doc["entries"]]
        if digest_entries(is_dir, entries)[0] != sha:
            return None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return is_dir, entries


class RemoteObjects:
    """The objects under `root` on the fsspec filesystem `fs`, with downloads cached in `cache_dir`."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, cache_dir: Path):
        self.fs, self._root, self.cache_dir = fs, root.rstrip("/"), Path(cache_dir)
        # key -> stat signature of the cached copy when it last matched its digest: a copy that
        # nobody touched since is not read again (any write changes its ctime, which a process cannot
        # set back).
        self._verified: dict[str, tuple] = {}

    def join(self, key: str) -> str:
        return f"{self._root}/{key}" if self._root else key

    # -- upload ------------------------------------------------------------------------------

    def put(self, path: Path, key: str, is_dir: bool, entries: list[Entry]) -> None:
        """Upload `path` (whose entries are `entries`) to `key` unless a verified copy is there."""
        expected = manifest(is_dir, entries)
        remote = self.join(key)
        if self.fs.exists(remote):
            problem = self._differs(remote, is_dir, entries)
            if problem is None:
                if self._manifest_bytes(key) != _encode(expected):
                    # The object was read back and is byte for byte what we store; only its
                    # completion mark is missing (an upload stopped after the move) or damaged.
                    self._write_manifest(key, expected)
                return
            log.warning("replacing remote object %s: %s", remote, problem)
            self._remove(key)
        tmp = self.join(f"staging/upload-{uuid.uuid4().hex}")
        try:
            # Upload under a temporary name, then move: on stores where a move is not atomic (object
            # stores copy file by file) a stop halfway leaves an object without a manifest, which
            # the next `put` reads back and replaces.
            self.fs.put(str(path), tmp, recursive=is_dir)
            self.fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(tmp, remote, recursive=is_dir)
        except BaseException:
            try:
                self.fs.rm(tmp, recursive=True)
            except Exception as exc:  # noqa: BLE001 - keep the upload's own error
                log.warning("could not remove the partial upload %s: %s", tmp, exc)
            raise
        self._write_manifest(key, expected)

    def _differs(self, remote: str, is_dir: bool, entries: list[Entry]) -> str | None:
        """Why the remote object is not exactly `entries` (read back in full), or None."""
        want = {e.path: e for e in entries if e.sha256 is not None}
        if self.fs.isdir(remote) != is_dir:
            return "it is a file where a directory belongs, or the reverse"
        if is_dir:
            prefix = remote + "/"
            found = {info["name"][len(prefix):]: info.get("size")
                     for info in self.fs.find(remote, detail=True).values()
                     if info["name"].startswith(prefix)}
        else:
            found = {"": self.fs.info(remote).get("size")}
        if missing := sorted(want.keys() - found.keys()):
            return f"{len(missing)} file(s) missing, e.g. {missing[0]!r} (an upload that did not finish)"
        if extra := sorted(found.keys() - want.keys()):
            return f"{len(extra)} file(s) that do not belong, e.g. {extra[0]!r}"
        for rel, entry in want.items():
            if found[rel] is not None and found[rel] != entry.size:
                return f"{rel or 'the file'} has {found[rel]} bytes instead of {entry.size}"
        for rel, entry in want.items():
            if _remote_digest(self.fs, f"{remote}/{rel}" if rel else remote) != entry.sha256:
                return f"{rel or 'the file'} does not match its sha256 (altered after upload)"
        return None

    def _manifest_bytes(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.join(key + MANIFEST_SUFFIX))
        except FileNotFoundError:
            return None

    def _write_manifest(self, key: str, doc: dict) -> None:
        self.fs.pipe_file(self.join(key + MANIFEST_SUFFIX), _encode(doc))

    def _remove(self, key: str) -> None:
        # The manifest goes first: while the object is replaced nothing marks it complete.
        _quietly(self.fs.rm, self.join(key + MANIFEST_SUFFIX))
        _quietly(self.fs.rm, self.join(key), recursive=True)

    # -- download ----------------------------------------------------------------------------

    def local_path(self, key: str) -> Path:
        """The cached copy of `key`, downloaded (or replaced) unless it matches the key's digest."""
        sha = key.rsplit("/", 1)[1]
        cache = self.cache_dir / key
        cache.parent.mkdir(parents=True, exist_ok=True)
        # One process at a time fills or replaces a cache entry; the others wait and then find it
        # complete. The lock dies with its process, so a killed download never blocks the rest.
        with _flock(cache.with_name(cache.name + ".lock")) as locked:
            if locked:
                # Whoever wrote these died holding the lock we now hold: they are left-overs.
                for stale in cache.parent.glob(f".{cache.name}.*-*"):
                    _remove_quietly(stale)
            if os.path.lexists(cache):
                problem = self._cache_differs(key, cache, sha)
                if problem is None:
                    return cache
                log.warning("replacing cached copy %s: %s", cache, problem)
                _discard(cache)
            self._download(key, sha, cache)
        return cache

    def _cache_differs(self, key: str, cache: Path, sha: str) -> str | None:
        try:
            signature = _signature(cache)
            if self._verified.get(key) == signature:
                return None
            actual = digest_path(cache)[0]
        except (StoreError, OSError) as exc:
            return str(exc)
        if actual != sha:
            return f"its digest is {actual[:12]}, not {sha[:12]} (truncated or altered)"
        self._verified[key] = signature
        return None

    def _download(self, key: str, sha: str, cache: Path) -> None:
        remote = self.join(key)
        tmp = cache.with_name(f".{cache.name}.part-{uuid.uuid4().hex}")
        try:
            if not self.fs.exists(remote):
                raise ArtifactIntegrityError(f"artifact {sha[:12]}: its remote object {remote} is missing")
            self.fs.get(remote, str(tmp), recursive=True)
            parsed = _parse_manifest(self._manifest_bytes(key) or b"", sha)
            if parsed and parsed[0]:
                # Object stores keep no empty directories; the manifest still names them.
                for e in parsed[1]:
                    if e.sha256 is None:
                        (tmp / e.path).mkdir(parents=True, exist_ok=True)
            actual = digest_path(tmp)[0] if os.path.lexists(tmp) else None
            if actual != sha:
                raise ArtifactIntegrityError(
                    f"artifact {sha[:12]}: the remote object {remote} does not match its digest "
                    f"(now {(actual or 'nothing')[:12]}): it was altered or its upload did not finish; "
                    "storing the same output again (rerunning the stage that made it) replaces it")
            try:
                os.rename(tmp, cache)
            except OSError:
                if not os.path.lexists(cache):
                    raise
                # Without a working lock another process can place its copy first: use it if sound.
                if problem := self._cache_differs(key, cache, sha):
                    raise ArtifactIntegrityError(f"another process's cached copy {cache} is unsound: {problem}")
                return
            self._verified[key] = _signature(cache)
        finally:
            _remove_quietly(tmp)


def _remote_digest(fs: fsspec.AbstractFileSystem, name: str) -> str:
    h = hashlib.sha256()
    with fs.open(name, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _encode(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _signature(path: Path) -> tuple:
    """What changes whenever anything under `path` is written, renamed or removed."""
    def one(p: str) -> tuple:
        st = os.lstat(p)
        return (p[len(str(path)):], st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    items = [one(str(path))]
    if path.is_dir() and not path.is_symlink():
        for top, dirs, files in os.walk(path):
            dirs.sort()
            items += [one(os.path.join(top, name)) for name in sorted(dirs + files)]
    return tuple(items)


def _discard(path: Path) -> None:
    # Renamed aside first, so the path is free at once even if removing a large tree is slow.
    aside = path.with_name(f".{path.name}.discard-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    _remove_quietly(aside)


def _remove_quietly(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _flock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path`; yields whether locking worked."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:  # a filesystem without locks: unique temporary names still keep copies whole
            locked = False
        yield locked
    finally:
        os.close(fd)


def _quietly(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except FileNotFoundError:
        pass
