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
