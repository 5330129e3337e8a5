"""atomic_write: a failed write leaves neither the target nor a temporary file; a good one replaces the target."""

import pytest

from open_magvit2.fileio import atomic_write


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write(target, lambda p: p.write_text("one"))
    atomic_write(target, lambda p: p.write_text("two"))
    assert target.read_text() == "two"

    def fail(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_text() == "two"
    assert sorted(x.name for x in target.parent.iterdir()) == ["out.txt"]


def test_write_npy_is_atomic_and_exact(tmp_path):
    import numpy as np

    from open_magvit2.fileio import read_npy_header, write_npy

    arr = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    path = write_npy(tmp_path / "a.npy", arr)  # no ".npy" appended to the temporary name
    assert np.array_equal(np.load(path), arr) and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    with open(path, "rb") as f:
        assert read_npy_header(f) == ((2, 3, 4), False, np.dtype(np.int64))
        assert np.array_equal(np.frombuffer(f.read(), np.int64).reshape(2, 3, 4), arr)  # f is left at the data
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_npy(tmp_path, arr)


def test_output_checks_fail_before_any_work(tmp_path):
    from open_magvit2.fileio import check_output_dir, check_output_file

    (tmp_path / "f").write_text("x")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # a check creates nothing
    with pytest.raises(FileExistsError, match="existing file"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_output_file(tmp_path / "f" / "out.npy")
    with pytest.raises(IsADirectoryError, match="existing folder"):
        check_output_file(tmp_path)


def test_atomic_write_dir_leaves_nothing_half_written(tmp_path):
    from open_magvit2.fileio import atomic_write_dir

    out = tmp_path / "clips"

    def fails(tmp):
        (tmp / "0").mkdir()
        (tmp / "0" / "a.mp4").write_bytes(b"x")
        raise KeyboardInterrupt  # a build stopped half-way

    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(out, fails)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its half-written copy

    (tmp_path / ".clips.partial").mkdir()  # left by a killed writer: started over
    (tmp_path / ".clips.partial" / "stale").write_bytes(b"x")
    atomic_write_dir(out, lambda tmp: (tmp / "0").mkdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"] and [p.name for p in out.iterdir()] == ["0"]

    (tmp_path / "empty").mkdir()  # an empty folder is replaced; a full one is not
    atomic_write_dir(tmp_path / "empty", lambda tmp: (tmp / "x").write_bytes(b"1"))
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["x"]
    with pytest.raises(OSError):
        atomic_write_dir(out, lambda tmp: (tmp / "1").mkdir())
    assert [p.name for p in out.iterdir()] == ["0"] and not (tmp_path / ".clips.partial").exists()
