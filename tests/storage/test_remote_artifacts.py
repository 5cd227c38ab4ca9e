"""Remote (fsspec) artifact stores: verified uploads, a verified download cache, concurrent readers.

The remote is a real fsspec filesystem: "dir::file://<tmp>" (the local file protocol wrapped as a
directory-rooted remote, shareable between processes) or "memory://".
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from selfrefine.errors import ArtifactIntegrityError
from selfrefine.storage.artifacts import ArtifactStore, key_for
from selfrefine.storage.digests import digest_path


def _tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


FILES = {"weights.bin": bytes(range(256)) * 64, "config.json": b'{"layers": 2}', "tok/vocab.txt": b"a\nb\n"}


@pytest.fixture
def remote(tmp_path):
    """(URL, local directory) of a remote store rooted at a fresh directory."""
    where = tmp_path / "remote"
    where.mkdir()
    return f"dir::file://{where}", where


def _reader(monkeypatch, tmp_path):
    """A store handle as on another machine: its own SELFREFINE_HOME, so an empty download cache."""
    home = tmp_path / f"home-{uuid.uuid4().hex[:8]}"
    home.mkdir()
    monkeypatch.setenv("SELFREFINE_HOME", str(home))
    return home


def _put_tree(store, files):
    with store.staging() as out:
        return store.put(_tree(out / "model", files))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_upload_writes_a_manifest_of_every_file_and_round_trips(remote, tmp_path, monkeypatch):
    url, where = remote
    store = ArtifactStore(url)
    with store.staging() as out:
        model = _tree(out / "model", FILES)
        (model / "empty").mkdir()
        obj = store.put(model)
    manifest = json.loads((where / f"{obj.key}.manifest.json").read_text())
    files = {e["path"]: (e["size"], e["sha256"]) for e in manifest["entries"] if e["type"] == "file"}
    assert files == {rel: (len(data), _sha(data)) for rel, data in FILES.items()}
    assert manifest["sha256"] == obj.sha256 and manifest["is_dir"] is True
    # Doctor sees the object, not its manifest.
    assert store.stored_keys() == {obj.key} and store.staging_paths() == []

    _reader(monkeypatch, tmp_path)
    reader = ArtifactStore(url)
    reader.verify(obj.key, obj.sha256)
    got = reader.local_path(obj.key)
    assert {rel: (got / rel).read_bytes() for rel in FILES} == FILES and (got / "empty").is_dir()


def test_interrupted_upload_is_not_trusted_and_a_later_put_completes_it(remote, tmp_path, monkeypatch):
    url, where = remote
    source = _tree(tmp_path / "src", FILES)
    sha, _ = digest_path(source)
    # What an upload that stopped partway leaves at the object key: some files, one truncated, no manifest.
    partial = where / key_for(sha)
    _tree(partial, {"config.json": FILES["config.json"], "weights.bin": FILES["weights.bin"][:100]})

    _reader(monkeypatch, tmp_path)
    with pytest.raises(ArtifactIntegrityError):
        ArtifactStore(url).verify(key_for(sha), sha)

    store = ArtifactStore(url)
    obj = _put_tree(store, FILES)
    assert obj.key == key_for(sha)
    assert (where / f"{obj.key}.manifest.json").is_file()
    assert {rel: (partial / rel).read_bytes() for rel in FILES} == FILES

    _reader(monkeypatch, tmp_path)
    reader = ArtifactStore(url)
    reader.verify(obj.key, obj.sha256)
    assert (reader.local_path(obj.key) / "weights.bin").read_bytes() == FILES["weights.bin"]


def test_complete_object_without_its_manifest_is_read_back_before_it_is_marked(remote, tmp_path):
    url, where = remote
    store = ArtifactStore(url)
    obj = _put_tree(store, FILES)
    marker = where / f"{obj.key}.manifest.json"
    good = marker.read_bytes()
    marker.unlink()  # an upload that stopped between moving the object and writing the manifest
    assert _put_tree(store, FILES) == obj
    assert marker.read_bytes() == good


class _StopsMidMove(MemoryFileSystem):
    """A memory filesystem whose copies fail after `copies_left` files: an object store's move
    copies file by file and then deletes, so a lost connection leaves part of the object behind."""

    protocol = "stopsmidmove"
    store, pseudo_dirs = {}, [""]
    copies_left: int | None = None

    def cp_file(self, path1, path2, **kwargs):
        if type(self).copies_left is not None:
            if type(self).copies_left == 0:
                raise ConnectionError("connection lost")
            type(self).copies_left -= 1
        return super().cp_file(path1, path2, **kwargs)


def test_upload_stopped_halfway_through_the_move_is_replaced_by_the_next_put(tmp_path, monkeypatch):
    fsspec.register_implementation(_StopsMidMove.protocol, _StopsMidMove, clobber=True)
    url = f"{_StopsMidMove.protocol}://r-{uuid.uuid4().hex}"
    store = ArtifactStore(url)
    monkeypatch.setattr(_StopsMidMove, "copies_left", 1)
    with pytest.raises(ConnectionError):
        _put_tree(store, FILES)
    monkeypatch.setattr(_StopsMidMove, "copies_left", None)
    sha, _ = digest_path(_tree(tmp_path / "src", FILES))
    assert store.exists(key_for(sha))  # part of the object is at its key, without a manifest
    assert not store.fs.exists(store._join(key_for(sha) + ".manifest.json"))

    obj = _put_tree(store, FILES)
    _reader(monkeypatch, tmp_path)
    reader = ArtifactStore(url)
    reader.verify(obj.key, obj.sha256)
    got = reader.local_path(obj.key)
    assert {rel: (got / rel).read_bytes() for rel in FILES} == FILES


def test_tampered_remote_object_is_detected_and_replaced(remote, tmp_path, monkeypatch):
    url, where = remote
    obj = _put_tree(ArtifactStore(url), FILES)
    weights = where / obj.key / "weights.bin"
    weights.write_bytes(b"\xff" + FILES["weights.bin"][1:])  # same size, one byte changed

    _reader(monkeypatch, tmp_path)
    with pytest.raises(ArtifactIntegrityError):
        ArtifactStore(url).verify(obj.key, obj.sha256)
    assert _put_tree(ArtifactStore(url), FILES) == obj  # reads the object back, finds it altered
    assert weights.read_bytes() == FILES["weights.bin"]

    _reader(monkeypatch, tmp_path)
    ArtifactStore(url).verify(obj.key, obj.sha256)


def test_missing_remote_object_fails_verification(remote, tmp_path, monkeypatch):
    url, where = remote
    obj = _put_tree(ArtifactStore(url), FILES)
    ArtifactStore(url).verify(obj.key, obj.sha256)  # now cached on this machine
    shutil.rmtree(where / obj.key)
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        ArtifactStore(url).verify(obj.key, obj.sha256)
    _reader(monkeypatch, tmp_path)
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        ArtifactStore(url).local_path(obj.key)


@pytest.mark.parametrize("url", ["dir", "memory"])
def test_corrupted_download_cache_is_replaced(url, remote, tmp_path):
    url = remote[0] if url == "dir" else f"memory://c-{uuid.uuid4().hex}"
    store = ArtifactStore(url)
    obj = _put_tree(store, FILES)
    with store.staging() as out:
        single = store.put(_tree(out, {"metrics.json": b'{"accuracy": 0.75}'}) / "metrics.json")
    cached, cached_file = store.local_path(obj.key), store.local_path(single.key)

    # Truncated, in the handle that downloaded it and in a new one.
    (cached / "weights.bin").write_bytes(FILES["weights.bin"][:10])
    assert (store.local_path(obj.key) / "weights.bin").read_bytes() == FILES["weights.bin"]
    (cached / "weights.bin").write_bytes(FILES["weights.bin"][:10])
    ArtifactStore(url).verify(obj.key, obj.sha256)
    assert (cached / "weights.bin").read_bytes() == FILES["weights.bin"]

    # Same size, its modification time put back; and an extra file in a cached directory.
    st = os.stat(cached_file)
    cached_file.write_bytes(b'{"accuracy": 0.99}')
    os.utime(cached_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.local_path(single.key).read_bytes() == b'{"accuracy": 0.75}'
    (cached / "extra.txt").write_text("x")
    # A download that died midway is cleared away by the next one to take the object's lock.
    dead = _tree(cached.parent / f".{cached.name}.part-dead", {"weights.bin": b"half"})
    assert not (ArtifactStore(url).local_path(obj.key) / "extra.txt").exists()
    assert not dead.exists()


def _download(url, keys, barrier, results):
    """In a spawned process: for each key, wait for the other downloader, then fetch and digest it."""
    store = ArtifactStore(url)
    for key in keys:
        try:
            barrier.wait(timeout=60)
            began = time.monotonic()
            path = store.local_path(key)
            results.put((key, "ok", digest_path(path)[0], began, time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent test
            results.put((key, "error", repr(exc), 0.0, 0.0))


def test_two_processes_downloading_the_same_directory_both_succeed(remote, tmp_path, monkeypatch):
    url, _ = remote
    # Many files, so that both downloads are in flight at the same time.
    files = {f"shard-{i:03d}/part.bin": os.urandom(4096) for i in range(300)}
    objects = [_put_tree(ArtifactStore(url), {**files, "round": str(r).encode()}) for r in range(3)]
    _reader(monkeypatch, tmp_path)  # an empty cache shared by the two processes (same home)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    keys = [obj.key for obj in objects]
    procs = [ctx.Process(target=_download, args=(url, keys, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(2 * len(keys))]
    for p in procs:
        p.join(timeout=60)
    overlapped = 0
    for obj in objects:
        mine = [o for o in outcomes if o[0] == obj.key]
        assert [o[1:3] for o in mine] == [("ok", obj.sha256)] * 2
        # Both had asked for the object before either had it: the downloads really were concurrent.
        overlapped += max(o[3] for o in mine) < min(o[4] for o in mine)
    assert overlapped >= 1
