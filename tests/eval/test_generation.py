"""evaluate-generator on small ADM-format .npz files: every number recomputed from the library's own forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from open_magvit2.eval import metrics as M
from open_magvit2.eval.backbones import load_inception
from open_magvit2.eval.datasets import iter_npz_images, npz_info
from open_magvit2.eval.generation import GeneratorEvalConfig, evaluate_generator


@pytest.fixture(scope="module")
def npz_files(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    base = photo("astronaut")[::8, ::8][:48, :48]  # (48, 48, 3)
    ref = np.stack([np.roll(base, 5 * i, axis=1) for i in range(3)]).astype(np.uint8)
    smp = np.clip(ref.astype(int) + rng.integers(-40, 40, ref.shape), 0, 255).astype(np.uint8)
    np.savez(d / "ref.npz", arr_0=ref)
    np.savez(d / "samples.npz", arr_0=smp)
    return d / "samples.npz", d / "ref.npz", smp, ref


class _RecordingInception(torch.nn.Module):
    """The ADM feature network (equal to torch-fidelity's forward: test_backbones), keeping inputs and outputs."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.weights_path, self.calls = net, net.weights_path, []

    def adm_features(self, x):
        out = self.net.adm_features(x)
        self.calls.append((x.clone(), out))
        return out


@pytest.fixture(scope="module")
def inception(weights):
    return _RecordingInception(load_inception(weights["inception"], prefer="torch-fidelity"))


def _features(calls, images: np.ndarray):
    """The recorded features of exactly these images (checking that they were what the network saw)."""
    x = torch.cat([c[0] for c in calls])
    assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
    return type(calls[0][1])(*(torch.cat([getattr(c[1], f) for c in calls]) for f in calls[0][1]._fields))


def test_npz_streaming_reads_every_image_in_order(npz_files):
    path, _, smp, _ = npz_files
    assert npz_info(path).shape == (3, 48, 48, 3)
    batches = list(iter_npz_images(path, 2))
    assert [len(b) for b in batches] == [2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), smp)


def test_generator_metrics_equal_direct_computation(npz_files, inception, tmp_path):
    smp_path, ref_path, smp, ref = npz_files
    cfg = GeneratorEvalConfig(samples=str(smp_path), reference=str(ref_path), output=str(tmp_path), batch_size=2,
                              k=2, is_split=2, pr_float16=False, progress=False)
    inception.calls.clear()
    r = evaluate_generator(cfg, inception=inception)
    fr, fs = _features(inception.calls[:2], ref), _features(inception.calls[2:], smp)  # batches of 2: 2 + 2
    pool_s, pool_r = fs.pool.double().numpy(), fr.pool.double().numpy()
    assert r.fid == pytest.approx(M.frechet_distance_low_rank(*M.feature_statistics(pool_r), pool_s), rel=1e-6)
    assert r.sfid == pytest.approx(
        M.frechet_distance_low_rank(*M.feature_statistics(fr.spatial.double().numpy()), fs.spatial.double().numpy()),
        rel=1e-6)
    assert r.inception_score == pytest.approx(M.inception_score(fs.logits_unbiased, split_size=2), rel=1e-6)
    assert (r.precision, r.recall) == M.precision_recall(fr.pool, fs.pool, k=2, half=False)
    assert r.num_samples == 3 and r.num_reference == 3 and (tmp_path / "metrics.md").is_file()


def test_stored_reference_statistics_are_used(npz_files, inception, tmp_path):
    smp_path, _, smp, _ = npz_files
    mu, sigma = np.zeros(2048), np.eye(2048) * 0.5  # ADM reference files carry mu/sigma (+ mu_s/sigma_s)
    mu_s, sigma_s = np.ones(2023), np.eye(2023)
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)  # no arr_0: no precision/recall
    inception.calls.clear()
    r = evaluate_generator(GeneratorEvalConfig(samples=str(smp_path), reference=str(stats), progress=False),
                           inception=inception)
    fs = _features(inception.calls, smp)  # only the samples were read
    assert r.fid == pytest.approx(M.frechet_distance_low_rank(mu, sigma, fs.pool.double().numpy()), rel=1e-6)
    assert r.sfid == pytest.approx(M.frechet_distance_low_rank(mu_s, sigma_s, fs.spatial.double().numpy()), rel=1e-6)
    assert r.precision is None and "stored" in r.protocol["reference_statistics"]


def test_bad_npz_files_are_explained(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"no 'arr_0'.*holds \['images'\]"):
        npz_info(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", arr_0=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        npz_info(tmp_path / "g.npz")
