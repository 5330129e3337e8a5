"""The precision policy (precision.py): the one TF32 switch, dtype names, the channels-last table."""

import pytest
import torch

from open_magvit2 import precision


@pytest.fixture
def restore_cudnn():
    saved = torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cudnn.allow_tf32 = saved
    torch.set_float32_matmul_precision("highest")


def test_set_tf32_switches_matmuls_and_cudnn_together(restore_cudnn):
    precision.set_tf32(True)
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    assert precision.tf32_enabled()
    precision.set_tf32(False)
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    assert not precision.tf32_enabled()
    with pytest.raises(TypeError, match="True or False"):
        precision.set_tf32("yes")


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("fp32", torch.float32), ("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16), ("fp16", torch.float16),
     (torch.float16, torch.float16), (None, None)],
)
def test_resolve_dtype(name, dtype):
    assert precision.resolve_dtype(name) is dtype


@pytest.mark.parametrize("bad", ["int8", "float64", torch.int64, torch.float64, 3])
def test_resolve_dtype_rejects_others(bad):
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        precision.resolve_dtype(bad)


def test_channels_last_table():
    assert precision.channels_last(torch.device("cpu")) is precision.CHANNELS_LAST["cpu"]
    assert precision.channels_last(torch.device("meta")) is False
