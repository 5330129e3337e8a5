"""`generate` names its output folders after the classes a checkpoint records (classes.json), else by id."""

from __future__ import annotations

import json
import shutil

from open_magvit2.cli import main
from open_magvit2.cli.generate import class_folders


def test_folders_take_the_class_names_of_the_checkpoint(gen_dir, tmp_path, capsys):
    ckpt = tmp_path / "gen"
    shutil.copytree(gen_dir, ckpt)
    names = [f"c{i}" for i in range(16)]
    names[3], names[5] = "golden retriever", "tench/Tinca tinca"
    (ckpt / "classes.json").write_text(json.dumps(names))
    out = tmp_path / "out"
    assert main(["generate", "-c", str(ckpt), "--classes", "3", "5", "--num-per-class", "1", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["golden_retriever", "grid.png", "tench_Tinca_tinca"]
    assert (out / "golden_retriever" / "0.png").is_file()
    assert f"class 3 (golden retriever): 1 images → {out / 'golden_retriever'}" in capsys.readouterr().out


def test_folders_are_ids_without_names(gen_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", "-c", str(gen_dir), "--classes", "3", "--num-per-class", "1", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["3", "grid.png"]


def test_names_that_would_share_a_folder_keep_their_ids():
    names = ["a b", "a/b", "", "c"]
    assert class_folders([0, 1, 2, 3], names) == {0: "0_a_b", 1: "1_a_b", 2: "2", 3: "c"}
    assert class_folders([0, 3], None) == {0: "0", 3: "3"}
