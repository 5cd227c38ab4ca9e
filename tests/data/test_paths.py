"""Path confinement: configured data paths stay inside their root, symlinks included."""

from __future__ import annotations

import os

import pytest

from selfrefine.data import DataSource, confine, load_pairs
from selfrefine.errors import PathEscapeError


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "pairs.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "outside.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    return root


def test_paths_inside_the_root_resolve(root):
    assert confine("sub/pairs.jsonl", root) == (root / "sub" / "pairs.jsonl").resolve()
    assert confine("sub/../sub/pairs.jsonl", root) == (root / "sub" / "pairs.jsonl").resolve()
    assert confine(root / "sub" / "pairs.jsonl", root) == (root / "sub" / "pairs.jsonl").resolve()
    assert confine("not-yet-written.jsonl", root) == (root / "not-yet-written.jsonl").resolve()


@pytest.mark.parametrize("path", ["../outside.jsonl", "sub/../../outside.jsonl", "/etc/passwd"])
def test_paths_leaving_the_root_are_refused(root, path):
    with pytest.raises(PathEscapeError, match="outside the allowed root"):
        confine(path, root)


def test_a_symlink_out_of_the_root_is_refused(root):
    os.symlink(root.parent / "outside.jsonl", root / "link.jsonl")
    with pytest.raises(PathEscapeError):
        confine("link.jsonl", root)
    os.symlink(root.parent, root / "up")
    with pytest.raises(PathEscapeError):
        confine("up/outside.jsonl", root)


def test_loaders_confine_their_path_when_given_a_root(root):
    inside = DataSource(kind="local", path="sub/pairs.jsonl", root=str(root), dimension="helpful")
    assert len(load_pairs(inside)) == 1
    with pytest.raises(PathEscapeError):
        load_pairs(DataSource(kind="local", path="../outside.jsonl", root=str(root), dimension="helpful"))
    with pytest.raises(PathEscapeError):
        load_pairs(DataSource(kind="shp", path="../outside.jsonl", root=str(root)))
