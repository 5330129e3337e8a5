"""Bad input to the training commands (train-tokenizer, train-generator, export, plot-run), as a new user gives it:
the bad-input table of ``test_bad_input.py`` for the commands that write run directories.

Every row must exit with status 2 and one line on stderr (no traceback) that matches the row's pattern, and leave
nothing behind: no run directory, no export folder, no temporary sibling. Every mistake is found before the run
directory is created, so fixing the typo and rerunning the same command just works (checked at the end).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main

from official import FIXTURES, write_official_ckpt

ONE_STEP = ["--max-steps", "1", "--set", "run.sample_every=0", "--set", "run.log_every=1"]


def _photos(root: Path, n: int = 6, side: int = 40) -> Path:
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")[:n]
    for i, name in enumerate(names):
        im = getattr(data, name)()
        im = np.repeat(im[..., None], 3, axis=-1) if im.ndim == 2 else im[..., :3]
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).resize((side + 8, side), Image.BILINEAR).save(d / f"{name}.png")
    return root


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("badtrain")
    e = SimpleNamespace(d=str(d), out=str(d / "out"), photos=str(_photos(d / "photos")),
                        ckpt=str(FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"))
    (d / "empty").mkdir()
    (d / "empty.yaml").write_text("")
    (d / "list.yaml").write_text("- model\n- tiny\n")
    # a token set from the official ar_tiny first stage (32 px → 8 × 8 tokens, 4× downsampling), 2 classes
    ar = write_official_ckpt("ar_tiny", d / "ar_tiny.ckpt")
    assert _run(["tokenize-dataset", "--checkpoint", str(ar), "--data", e.photos, "--size", "32",
                 "--output", str(d / "tokens")]) == 0
    e.tokens = str(d / "tokens")
    shutil.copytree(d / "tokens", d / "no_tok")
    shutil.rmtree(d / "no_tok" / "tokenizer")
    shutil.copytree(d / "tokens", d / "bad_index")
    (d / "bad_index" / "index.json").write_text("{not json")
    shutil.copytree(d / "tokens", d / "partial")
    next((d / "partial").glob("*.npy")).unlink()
    # runs: a generator (no EMA in its recipe) and a tokenizer whose newest checkpoint holds non-finite weights
    gen_args = ["--set", "data.batch_size=2", *ONE_STEP]
    assert _run(["train-generator", "-c", "tiny", "--data", e.tokens, "--output", str(d / "gen_run"), *gen_args]) == 0
    e.gen_run = str(d / "gen_run")
    tok_args = ["--set", "data.size=32", "--set", "data.batch_size=2", *ONE_STEP]
    assert _run(["train-tokenizer", "-c", "tiny", "--data", e.photos, "--output", str(d / "tok_run"), *tok_args]) == 0
    ckpt = d / "tok_run" / "checkpoints" / "step_0000001"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    for part in ("model", "ema"):
        w = next(k for k in state[part] if k.endswith("weight"))
        state[part][w] = torch.full_like(state[part][w], float("nan"))
    torch.save(state, ckpt / "state.pt")
    e.nan_run, e.nan_ckpt = str(d / "tok_run"), str(ckpt)
    (d / "full").mkdir()
    (d / "full" / "x").write_text("mine")
    return e


TOK = "train-tokenizer -c tiny --data {photos} --output {out} --max-steps 1"
GEN = "train-generator -c tiny --data {tokens} --output {out} --max-steps 1 --set data.batch_size=2"
CASES = [
    # ---- train-tokenizer: the recipe -------------------------------------------------------------------------
    ("tok-batch-size-0", TOK + " --set data.batch_size=0", r"data\.batch_size must be >= 1, got 0"),
    ("tok-size-33", TOK + " --set data.size=33 --set data.batch_size=2", r"data\.size 33 must be a multiple of 8"),
    ("tok-seed-negative", TOK + " --seed -1", r"run\.seed must be >= 0, got -1"),
    ("tok-workers-negative", TOK + " --set data.num_workers=-1", r"data\.num_workers must be >= 0, got -1"),
    ("tok-lr-nan", TOK + " --set optim.lr=nan", r"optim\.lr must be a finite number"),
    ("tok-freeze-typo", TOK + " --set freeze=[encodr]", r"freeze names parts of the tokenizer, one of "),
    ("tok-freeze-all", TOK + " --set freeze=[encoder,decoder]", r"nothing would train"),
    ("tok-max-steps-0", TOK.replace("--max-steps 1", "--max-steps 0"), r"run\.max_steps must be >= 1"),
    ("tok-unknown-preset", TOK + " --set model=imagenet_64", r"unknown tokenizer preset 'imagenet_64'"),
    ("tok-unknown-key", TOK + " --set optim.lrr=1", r"unknown config key optim\.lrr; optim has: lr, "),
    ("tok-unknown-model-arg", TOK + " --set model_args.chh=8", r"unknown model_args chh; the allowed keys are ch, "),
    ("tok-exact-entropy-40-bits", TOK + " --set model_args.z_channels=40", r"the exact codebook entropy of 40 "
     r"bits needs the 2\^40-entry codebook distribution \(4\.0 TiB .*set entropy_group_bits \(e\.g\. 8\)"),
    ("tok-entropy-group-bits-0", TOK + " --set model_args.entropy_group_bits=0",
     r"entropy_group_bits must be an int in \[1, 18\] .* got 0"),
    ("tok-entropy-group-bits-past-k", TOK + " --set model_args.entropy_group_bits=19",
     r"entropy_group_bits must be an int in \[1, 18\] .* got 19"),
    ("tok-empty-yaml", TOK.replace("-c tiny", "-c {d}/empty.yaml"), r"the recipe is empty; start from one"),
    ("tok-yaml-list", TOK.replace("-c tiny", "-c {d}/list.yaml"), r"a recipe is a mapping of sections"),
    ("tok-unknown-recipe", TOK.replace("-c tiny", "-c tinyy"), r"--config tinyy: neither a recipe file nor a "
     r"shipped tokenizer recipe; the shipped ones are imagenet_128_L, "),
    ("tok-missing-recipe", TOK.replace("-c tiny", "-c {d}/nope.yaml"), r"config file not found: .*nope\.yaml"),
    # ---- train-tokenizer: the data ---------------------------------------------------------------------------
    ("tok-data-missing", TOK.replace("{photos}", "{d}/nope"), r"no such image folder or shard"),
    ("tok-data-empty", TOK.replace("{photos}", "{d}/empty"), r"no image files .* found under"),
    ("tok-too-few-images", TOK + " --set data.batch_size=8", r"6 samples make no batch of 8"),
    ("tok-data-is-token-set", TOK.replace("{photos}", "{tokens}"), r"no image files"),
    # ---- train-tokenizer: the init checkpoint ----------------------------------------------------------------
    ("tok-init-missing", TOK + " --set init.checkpoint={d}/nope.ckpt", r"nope\.ckpt: no such file"),
    ("tok-init-architecture", TOK + " --set init.checkpoint={ckpt}", r"holds a tokenizer with ch=.* the recipe "
     r"builds ch=32.*Pick the matching preset"),
    ("tok-init-generator-run", TOK + " --set init.checkpoint={gen_run}", r"is a generator run checkpoint, not a "
     r"tokenizer one"),
    ("tok-init-ema-missing", TOK + " --set init.checkpoint={gen_run} --set init.weights=ema",
     r"is a generator run checkpoint"),
    ("tok-inflate-image", TOK + " --set init.inflate_from={ckpt}", r"init\.inflate_from inflates an image tokenizer "
     r"into a video one"),
    ("tok-zero-past-taps-image", TOK + " --set init.zero_past_taps=true", r"init\.zero_past_taps is for video "
     r"tokenizers \(temporal kernels\); the recipe's model is an image tokenizer$"),
    ("tok-zero-past-taps-checkpoint", TOK + " --set init.zero_past_taps=true --set init.checkpoint={ckpt}",
     r"init\.zero_past_taps shapes a fresh initialisation; init\.checkpoint and init\.inflate_from bring their own "
     r"weights"),
    ("gen-zero-past-taps", GEN + " --set init.zero_past_taps=true", r"init\.inflate_from and init\.zero_past_taps "
     r"are for video tokenizers; a generator starts from init\.checkpoint$"),
    # ---- train-tokenizer: the output -------------------------------------------------------------------------
    ("tok-output-used", TOK.replace("{out}", "{d}/full"), r"--output .*full is not empty; pass --resume auto"),
    ("tok-resume-nothing", TOK + " --resume {d}/nope", r"--resume .*nope: neither a checkpoint directory"),
    ("tok-resume-generator", TOK + " --resume {gen_run}", r"is a generator checkpoint, not a tokenizer one"),
    # ---- train-generator ---------------------------------------------------------------------------------------
    ("gen-data-images", GEN.replace("{tokens}", "{photos}"), r"not a token set \(no index\.json\); make one with"),
    ("gen-data-missing-tokenizer", GEN.replace("{tokens}", "{d}/no_tok"), r"the token set's tokenizer folder is "
     r"missing"),
    ("gen-data-corrupt-index", GEN.replace("{tokens}", "{d}/bad_index"), r"index\.json"),
    ("gen-data-partial", GEN.replace("{tokens}", "{d}/partial"), r"\.npy"),
    ("gen-frames-on-images", GEN + " --set model_args.frames=3", r"model_args\.frames is for video generators, but "
     r"the data is an image token set \(8×8 token grids\); drop it, or give a token set made by a video tokenizer$"),
    ("gen-grid-mismatch", GEN + " --set model_args.grid_size=5", r"model_args\.grid_size=5 but the data has a 8×8 "
     r"token grid"),
    ("gen-classes-mismatch", GEN + " --set model_args.num_classes=3", r"model_args\.num_classes=3 but the data has "
     r"2 classes"),
    ("gen-bits-mismatch", GEN + " --set model_args.factorized_bits=[4,4]", r"sums to 8 but the data's tokens have "
     r"18 bits"),
    ("gen-recipe-bits-mismatch", GEN.replace("-c tiny", "-c tiny_32bit"), r"model_args\.factorized_bits=\[8, 8, 8, 8\] "
     r"sums to 32 but the data's tokens have 18 bits; the sub-token bits must add up to the tokenizer's$"),
    ("gen-tokenizer-bits-mismatch", GEN.replace("-c tiny", "-c tiny_32bit").replace("{tokens}", "{photos}")
     + " --set data.tokenizer={d}/ar_tiny.ckpt --set data.size=32", r"model_args\.factorized_bits=\[8, 8, 8, 8\] "
     r"sums to 32 but the data's tokens have 18 bits"),
    ("gen-split-zero", GEN + " --set model_args.factorized_bits=[9,0,9]", r"factorized_bits must be positive ints "
     r"such as \(6, 12\), got \[9, 0, 9\]$"),
    ("gen-sample-cfg-count", GEN + " --set model_args.sample_cfg_scale=[1.5,2,2]", r"sample_cfg_scale has 3 values "
     r"but factorized_bits \(6, 12\) makes 2 sub-tokens; give one value per sub-token$"),
    ("gen-sample-classes", GEN + " --set samples.classes=[7]", r"samples\.classes \[7\] outside \[0, 2\)"),
    ("gen-batch-0", GEN + " --set data.batch_size=0", r"data\.batch_size and data\.size must be >= 1"),
    ("gen-too-few", GEN.replace("data.batch_size=2", "data.batch_size=64"), r"make no batch of 64"),
    ("gen-init-tokenizer-run", GEN + " --set init.checkpoint={nan_run}", r"is a tokenizer run checkpoint, not a "
     r"generator one"),
    ("gen-init-no-ema", GEN + " --set init.checkpoint={gen_run} --set init.weights=ema", r"keeps no EMA weights"),
    ("gen-resume-tokenizer", GEN + " --resume {nan_run}", r"is a tokenizer checkpoint, not a generator one"),
    ("gen-fsdp-ema", GEN + " --set parallel=fsdp --set run.ema_decay=0.999", r"parallel: fsdp keeps no EMA copy"),
    # ---- export ----------------------------------------------------------------------------------------------
    ("export-no-ema", "export {gen_run} {out} --weights ema", r"keeps no EMA weights .*use --weights raw"),
    ("export-nonfinite", "export {nan_ckpt} {out}", r"holds non-finite weights \(1 tensor, e\.g\. encoder\."),
    ("export-nonfinite-run", "export {nan_run} {out}", r"holds non-finite weights .*no older checkpoint"),
    ("export-not-a-run", "export {photos} {out}", r"no complete checkpoint"),
    ("export-into-used", "export {gen_run} {d}/full", r"full exists and is not empty"),
    ("export-into-file", "export {gen_run} {d}/empty.yaml", r"is an existing file"),
    # ---- plot-run ----------------------------------------------------------------------------------------------
    ("plot-suffix", "plot-run {gen_run} -o {out}.txt", r"name a \.png, \.jpg, \.pdf or \.svg file"),
    ("plot-not-a-run", "plot-run {photos} -o {out}.png", r"no metrics\.jsonl at"),
]


def _left(env: SimpleNamespace) -> list[str]:
    """What a failed command left: the output, or a temporary sibling of any run or export."""
    d = Path(env.d)
    out = Path(env.out)
    stray = [p.name for p in d.iterdir() if p.name.startswith(".") and (".tmp-" in p.name or p.suffix == ".partial")]
    return [str(p) for p in (out, Path(f"{out}.txt"), Path(f"{out}.png")) if p.exists()] + stray


@pytest.mark.parametrize(("argv", "pattern"), [pytest.param(a, p, id=i) for i, a, p in CASES])
def test_train_bad_input(env, argv, pattern, capsys):
    before = sorted(p.name for p in Path(env.d, "full").iterdir())
    code = _run(argv.format(**vars(env)).split())
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith(("usage:", "  ", "train:", "skipping "))]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert _left(env) == [], err
    assert sorted(p.name for p in Path(env.d, "full").iterdir()) == before  # a used folder is never touched


def test_after_a_typo_the_rerun_just_works(env, capsys):
    out = Path(env.d) / "rerun"
    assert _run(["train-tokenizer", "-c", "tiny", "--data", env.photos, "--output", str(out), "--set",
                 "data.size=33", "--set", "data.batch_size=2", *ONE_STEP]) == 2
    assert not out.exists()
    assert _run(["train-tokenizer", "-c", "tiny", "--data", env.photos, "--output", str(out), "--set",
                 "data.size=32", "--set", "data.batch_size=2", *ONE_STEP]) == 0
    assert (out / "checkpoints" / "step_0000001" / "meta.json").is_file()
    capsys.readouterr()


def test_resume_refuses_a_changed_recipe_and_keeps_the_run(env, capsys):
    run = Path(env.gen_run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert _run(["train-generator", "-c", "tiny", "--data", env.tokens, "--output", str(run), "--resume", "auto",
                 "--set", "data.batch_size=2", "--seed", "3", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "the recipe differs from the run's" in err and "run.seed: 0 → 3" in err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_plot_run_writes_the_format_its_suffix_names(env, capsys):
    out = Path(env.d) / "curves.jpg"
    assert _run(["plot-run", env.gen_run, "-o", str(out)]) == 0
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
    capsys.readouterr()


def test_export_default_takes_the_runs_own_result(env, capsys):
    out = Path(env.d) / "exported_gen"
    assert _run(["export", env.gen_run, str(out)]) == 0
    assert "exported the raw weights of step 1" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["metadata"]["weights"] == "raw"
    assert json.loads((out / "classes.json").read_text()) == ["a", "b"]  # generate names its folders with them
