"""One list of user errors and one line for each, shared by the CLI's error boundary and the web app."""

from __future__ import annotations

import errno

import pytest
import torch

from open_magvit2 import cli
from open_magvit2.errors import USER_ERRORS, describe_error
from open_magvit2.web import tasks


def test_one_line_for_each_kind_of_user_error():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/x.npy")
    assert describe_error(full) == "/data/out/x.npy: No space left on device; free some space or write elsewhere"
    assert describe_error(FileNotFoundError(2, "No such file or directory", "a.png")) == (
        "a.png: No such file or directory")
    assert describe_error(ValueError("two\n   lines")) == "two lines"
    assert describe_error(ImportError()) == "ImportError"
    assert describe_error(MemoryError(), out_of_memory="too big; use less") == "too big; use less"
    assert describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried…")) == "out of memory"
    assert describe_error(ValueError("/tmp/up/1/x.png: bad"), paths={"/tmp/up/1/x.png": "x.png"}) == "x.png: bad"
    assert MemoryError in USER_ERRORS and torch.cuda.OutOfMemoryError in USER_ERRORS


@pytest.mark.parametrize("exc", [MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory")])
def test_the_cli_and_the_web_app_say_it_the_same_way(exc, monkeypatch, capsys):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli.tokenizer, "run_convert", fail)
    assert cli.main(["convert", "some.ckpt", "out"]) == 2  # no traceback: a user error
    err = capsys.readouterr().err.strip()
    assert err == f"open-magvit2 convert: error: {describe_error(exc, out_of_memory=cli.OUT_OF_MEMORY)}"
    assert err.endswith("lower --batch-size or --size (or pass --tile for large videos), or use --device cpu when "
                        "the GPU is too small")
    assert describe_error(exc, out_of_memory=tasks.OUT_OF_MEMORY).startswith("out of memory: use a smaller image")
