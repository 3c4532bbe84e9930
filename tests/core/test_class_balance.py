"""Cross-entropy class weights from class frequencies, and the trainer options that use them."""
import numpy as np
import pytest
import torch

from flare_core.nnunet.class_balance import class_weights
from flare_core.nnunet.configured_trainer import _bfloat16_forward
from flare_core.nnunet.environment import cpu_has_native_bfloat16


def test_weights_follow_inverse_power_of_frequency_and_keep_the_mean_at_one():
    frequencies = np.array([0.9, 0.09, 0.01, 0.0])
    weights = class_weights(frequencies, 0.5)
    assert weights[3] == 0.0  # an absent class gets no weight
    assert weights[2] / weights[1] == pytest.approx(3.0)  # sqrt(0.09 / 0.01)
    assert weights[1] / weights[0] == pytest.approx(np.sqrt(10.0))
    assert float((weights * frequencies).sum()) == pytest.approx(1.0)


def test_power_zero_is_unweighted_and_negative_power_is_refused():
    assert class_weights(np.array([0.5, 0.3, 0.2]), 0.0) == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="power"):
        class_weights(np.array([0.5, 0.5]), -1.0)


def test_bfloat16_forward_returns_float32_and_leaves_the_module_alone():
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Conv3d(4, 3, 1))
    keys = list(network.state_dict())
    network.forward = _bfloat16_forward(network.forward)
    output = network(torch.randn(1, 1, 4, 8, 8))
    assert output.dtype == torch.float32
    assert list(network.state_dict()) == keys  # checkpoints stay plain nnU-Net ones
    assert network.forward.flare_bfloat16


def test_native_bfloat16_detection_reads_the_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    assert cpu_has_native_bfloat16() == (" avx512_bf16" in flags or " amx_bf16" in flags)
