"""The content-addressed artifact store."""

from __future__ import annotations

import pytest

from selfrefine.errors import ArtifactIntegrityError, PathEscapeError, StoreError
from selfrefine.storage.artifacts import ArtifactStore
from selfrefine.storage.digests import digest_path


def _tree(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_directory_digest_depends_on_names_and_contents_not_on_creation_order(tmp_path):
    a = _tree(tmp_path / "a", {"x.txt": "1", "sub/y.txt": "2"})
    b = _tree(tmp_path / "b", {"sub/y.txt": "2", "x.txt": "1"})
    c = _tree(tmp_path / "c", {"x.txt": "1", "sub/z.txt": "2"})
    assert digest_path(a) == digest_path(b)
    assert digest_path(a)[0] != digest_path(c)[0]
    assert digest_path(a)[1] == 2


def test_put_moves_into_the_content_address_and_dedups(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    with store.staging() as out:
        f = out / "f.txt"
        f.write_text("same")
        first = store.put(f)
        assert not f.exists()
    with store.staging() as out:
        (out / "g.txt").write_text("same")
        second = store.put(out / "g.txt")
    assert first == second and first.key.startswith(f"objects/{first.sha256[:2]}/")
    assert store.local_path(first.key).read_text() == "same"
    store.verify(first.key, first.sha256)
    assert store.stored_keys() == {first.key}
    # Staging directories are gone once their block ends.
    assert store.staging_paths() == []


def test_missing_object_fails_verification(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    with store.staging() as out:
        (out / "d").mkdir()
        (out / "d" / "w").write_text("w")
        obj = store.put(out / "d")
    import shutil
    shutil.rmtree(store.local_path(obj.key))
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        store.verify(obj.key, obj.sha256)


@pytest.mark.parametrize("key", ["../etc/passwd", "objects/../../x", "/etc/passwd",
                                 "objects/ab/" + "0" * 63, "objects/zz/" + "z" * 64])
def test_keys_cannot_escape_the_root(tmp_path, key):
    store = ArtifactStore(str(tmp_path / "root"))
    with pytest.raises(PathEscapeError):
        store.local_path(key)


def test_symlinks_are_not_stored(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    (tmp_path / "secret").write_text("s")
    with store.staging() as out:
        (out / "d").mkdir()
        (out / "d" / "link").symlink_to(tmp_path / "secret")
        with pytest.raises(StoreError, match="symlink"):
            store.put(out / "d")


def test_fsspec_memory_root_round_trips(tmp_path):
    store = ArtifactStore("memory://selfrefine-test")
    with store.staging() as out:
        (out / "m").mkdir()
        (out / "m" / "w.bin").write_bytes(b"\x00\x01")
        obj = store.put(out / "m")
    assert store.exists(obj.key)
    assert (store.local_path(obj.key) / "w.bin").read_bytes() == b"\x00\x01"
    store.verify(obj.key, obj.sha256)
