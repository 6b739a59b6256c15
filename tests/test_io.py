"""utils.io.atomic_path: what it may replace, and with which permissions."""

import os

import pytest

from deepwide.errors import DeepwideError
from deepwide.utils.io import atomic_path, atomic_write_text


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_atomic_folder_refuses_a_non_empty_folder_unless_told(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "user.txt").write_text("keep")
    with pytest.raises(DeepwideError, match="exists and is not empty"):
        with atomic_path(dest, is_dir=True) as tmp:
            (tmp / "a").write_text("new")
    assert (dest / "user.txt").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_path(dest, is_dir=True, merge=True) as tmp:
        (tmp / "a").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["a", "user.txt"]
    with atomic_path(dest, is_dir=True, replace=True) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left


def test_atomic_outputs_get_normal_permissions(tmp_path):
    with atomic_path(tmp_path / "d", is_dir=True) as tmp:
        (tmp / "x").write_text("1")
    atomic_write_text(tmp_path / "f.txt", "1")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~_umask()
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_path_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DeepwideError, match="exists and is not a folder"):
        with atomic_path(tmp_path / "f", is_dir=True):
            pass
    (tmp_path / "d").mkdir()
    with pytest.raises(DeepwideError, match="is a folder"):
        with atomic_path(tmp_path / "d"):
            pass
    assert (tmp_path / "f").read_text() == "x"
