"""Two CPU ranks under torchrun (gloo): DDP and FSDP2 give every rank the same weights and the one-process loss on
the union batch; FSDP2's sharded checkpoints resume exactly and export to a loadable save_pretrained folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from open_magvit2.cli import main
from open_magvit2.generator import ImageGenerator

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import NO_DROPOUT, TINY, WORKER, metrics, token_set, torchrun, weights

STEPS = 4
# No dropout: the ranks draw different dropout masks than one process would, so only then is the loss comparable.
SETS = [f"--set={s}" for s in ["run.log_every=1", "run.save_every=2", "run.sample_every=1000", *NO_DROPOUT]]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return token_set(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def one_process(tokens, tmp_path_factory):
    """The reference: one process, batch 4 (= 2 ranks × 2)."""
    out = tmp_path_factory.mktemp("one") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank runs (OMP_NUM_THREADS=1)
    try:
        assert main(["train-generator", "--config", str(TINY), "--data", str(tokens), "--output", str(out),
                     "--max-steps", str(STEPS), "--set=data.batch_size=4", *SETS]) == 0
    finally:
        torch.set_num_threads(n)
    return out


def _two_ranks(tokens: Path, out: Path, *extra: str) -> dict[int, dict[str, torch.Tensor]]:
    out.mkdir(parents=True)
    torchrun([str(WORKER), str(out), "train-generator", "--config", str(TINY), "--data", str(tokens), "--output",
              str(out / "run"), "--max-steps", str(STEPS), "--set=data.batch_size=2", *SETS, *extra])
    return {r: torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)}


def _same_losses(run: Path, reference: Path) -> None:
    a, b = metrics(run), metrics(reference)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        for k in ("loss", "loss/pre", "loss/post"):
            assert x[k] == pytest.approx(y[k], abs=1e-5), (x["step"], k)


def test_ddp_two_ranks_equal_one_process(tokens, one_process, tmp_path):
    ranks = _two_ranks(tokens, tmp_path / "ddp")
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # bit-identical replicas
    _same_losses(tmp_path / "ddp" / "run", one_process)
    assert main(["export", str(one_process), str(tmp_path / "ref")]) == 0
    ref = weights(tmp_path / "ref")
    for k, v in ranks[0].items():
        torch.testing.assert_close(v, ref[f"transformer.{k}"], atol=1e-5, rtol=0)


def test_fsdp_two_ranks_shard_resume_and_export(tokens, one_process, tmp_path):
    ranks = _two_ranks(tokens, tmp_path / "fsdp", "--set=parallel=fsdp")
    run = tmp_path / "fsdp" / "run"
    _same_losses(run, one_process)
    ckpt = run / "checkpoints" / "step_0000004"
    assert (ckpt / "shard-00000.pt").is_file() and (ckpt / "shard-00001.pt").is_file()
    assert main(["export", str(run), str(tmp_path / "exported")]) == 0
    full = weights(tmp_path / "exported")
    for k, shard0 in ranks[0].items():  # the gathered export is the concatenation of the ranks' shards
        assert torch.equal(torch.cat([shard0, ranks[1][k]]), full[f"transformer.{k}"])
    assert ranks[0]["norm.weight"].shape == (64,)  # really sharded: half of dim 128 on each rank
    gen = ImageGenerator.from_pretrained(tmp_path / "exported")
    assert gen.generate(torch.tensor([0, 3]), top_k=1).shape == (2, 8, 8)
    assert main(["export", str(one_process), str(tmp_path / "ref")]) == 0
    ref = weights(tmp_path / "ref")
    for k in ranks[0]:
        torch.testing.assert_close(full[f"transformer.{k}"], ref[f"transformer.{k}"], atol=1e-5, rtol=0)

    # resume from the sharded step-2 checkpoint into a new run directory: steps 3 and 4 again, bit for bit
    resumed = _two_ranks(tokens, tmp_path / "resumed", "--set=parallel=fsdp", "--resume",
                         str(run / "checkpoints" / "step_0000002"))
    assert all(torch.equal(resumed[r][k], ranks[r][k]) for r in (0, 1) for k in ranks[r])
    assert [m["loss"] for m in metrics(tmp_path / "resumed" / "run")] == [m["loss"] for m in metrics(run)][2:]
