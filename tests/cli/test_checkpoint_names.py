"""Checkpoints by released name through the Hugging Face cache, and paths that never reach the network."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from open_magvit2.checkpoints.hub import RELEASES, looks_like_path, native_size, resolve_pretrained
from open_magvit2.cli import main

from official import FIXTURES

CKPT = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"
REPO = Path(__file__).resolve().parents[2]


def fake_hub_cache(root: Path, name: str, source: Path) -> Path:
    """The Hugging Face cache layout (models--owner--repo/refs/main + snapshots/<commit>/file) holding ``source``
    under the file name of the release ``name``."""
    r = RELEASES[name]
    repo = root / f"models--{r.repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    shutil.copy(source, snap / r.filename)
    return snap / r.filename


NO_NETWORK = """
import socket, sys
def _refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
from open_magvit2.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_without_network(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(NO_NETWORK), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, cwd=REPO)


def test_the_release_table_names_every_file_and_repo():
    assert sorted(RELEASES) == sorted(["imagenet_128_L", "imagenet_256_L", "pretrain256_262144", "pretrain256_16384",
                                       "video_128_262144", "AR_256_B", "AR_256_L", "AR_256_XL"])
    assert RELEASES["imagenet_128_L"].repo_id == "TencentARC/Open-MAGVIT2-Tokenizer-128-resolution"
    assert RELEASES["AR_256_XL"].url == ("https://huggingface.co/TencentARC/Open-MAGVIT2-AR-XL-256-resolution/resolve/"
                                         "main/AR_256_XL.ckpt")
    doc = (REPO / "docs" / "checkpoints.md").read_text()
    for r in RELEASES.values():  # the docs table lists every release with its repo
        assert re.search(rf"`{r.name}`.*{re.escape(r.repo_id)}", doc), r.name
    assert native_size(8) == 128 and native_size(16) == 256


def test_reconstruct_by_released_name_from_the_cache_without_network(photos, tmp_path):
    """`open-magvit2 reconstruct imagenet_128_L photos/` with the tiny checkpoint cached under the released name,
    sockets disabled and no HF_HUB_OFFLINE: the cached file is used without asking the hub."""
    cache = tmp_path / "hf"
    fake_hub_cache(cache, "imagenet_128_L", CKPT)
    out = tmp_path / "out"
    run = _cli_without_network(["reconstruct", "imagenet_128_L", str(photos), "-o", str(out), "--workers", "0"],
                               {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a_compare.png", "a_recon.png", "sub/b_compare.png", "sub/b_recon.png"]
    # the tiny checkpoint downsamples 2×: its native size is 16 × 2 = 32
    assert Image.open(out / "sub" / "b_recon.png").size == (32, 32)
    direct = tmp_path / "direct"
    assert main(["reconstruct", str(photos), "-c", str(CKPT), "-o", str(direct), "--workers", "0"]) == 0
    for name in ("a_recon.png", "sub/b_recon.png"):
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(direct / name)))


def test_a_name_missing_from_the_cache_offline_is_one_line(photos, tmp_path):
    run = _cli_without_network(["reconstruct", "imagenet_256_L", str(photos), "-o", str(tmp_path / "o")],
                               {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"})
    err = run.stderr.strip()
    assert run.returncode == 2 and len(err.splitlines()) == 1, err
    assert "imagenet_256_L.ckpt" in err and RELEASES["imagenet_256_L"].url in err and "local path" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails and any hub download fails the test."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.mark.parametrize("name", ["ckpts/x.ckpt", "./model", "~/weights/m.pt", "/no/such/dir/m.safetensors",
                                  "imagenet_256_L.ckpt", "a\\b", "one/two/three"])
def test_a_missing_path_never_touches_the_network(no_network, name):
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no such file or directory") as e:
        resolve_pretrained(name)
    assert time.perf_counter() - t0 < 1.0
    if name == "imagenet_256_L.ckpt":  # the released name, mistyped with its suffix
        assert "pass that name" in str(e.value)


def test_missing_path_in_the_cli_is_one_line_without_network(no_network, photos, tmp_path, capsys):
    assert main(["reconstruct", str(photos), "-c", "ckpts/x.ckpt", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ckpts/x.ckpt: no such file or directory" in err
    assert not (tmp_path / "o").exists()


def test_what_looks_like_a_path():
    for text in ("x.ckpt", "dir/x.pt", ".", "./x", "/x", "~/x", "a\\b"):
        assert looks_like_path(text), text
    for text in ("imagenet_256_L", "owner/name", "owner/model-v1.5", "AR_256_B"):
        assert not looks_like_path(text), text


def test_bad_checkpoint_arguments_raise_type_and_value_errors():
    from open_magvit2 import ImageGenerator, ImageTokenizer

    with pytest.raises(TypeError, match="released name"):
        ImageTokenizer.from_pretrained(None)
    with pytest.raises(TypeError, match="released name"):
        ImageGenerator.from_pretrained(3)
    with pytest.raises(ValueError, match="empty"):
        resolve_pretrained("  ")
