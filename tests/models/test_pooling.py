"""ECA's descriptor through a block's last 1x1 convolution and eval-mode BatchNorm, against pooling after them."""

import copy

import pytest
import torch
from torch import nn

from ecanet import create_model
from ecanet.models.pooling import pooled_through_norm, pooled_through_projection

IN_CHANNELS, OUT_CHANNELS = 6, 16

# Relative to the largest expected value. Against float64 arithmetic on the same (rounded) values the
# result is float32 for every input but float64; against the modules' own output in their dtype, bfloat16
# carries the rounding of every convolution and BatchNorm output before the mean.
TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-5}
MODULE_DTYPE_TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _projection(bias: bool, affine: bool, dtype: torch.dtype) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A 1x1 convolution and an eval-mode BatchNorm whose statistics and affine are far from the defaults."""
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1, bias=bias)
    norm = nn.BatchNorm2d(OUT_CHANNELS, affine=affine)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        if bias:
            conv.bias.copy_(torch.randn(OUT_CHANNELS, generator=generator))
        norm.running_mean.copy_(torch.randn(OUT_CHANNELS, generator=generator))
        norm.running_var.copy_(torch.rand(OUT_CHANNELS, generator=generator) * 3 + 0.1)
        if affine:
            norm.weight.copy_(torch.randn(OUT_CHANNELS, generator=generator))
            norm.bias.copy_(torch.randn(OUT_CHANNELS, generator=generator))
    return conv.to(dtype), norm.to(dtype).eval()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=tolerance * scale)


def test_projection_is_for_cpu_tensors_and_compiled_code_only(monkeypatch):
    """On a GPU its small operations cost more in launches than the pass they save, unless inductor
    fuses them (here: meta tensors, eagerly and as if compiling)."""
    conv, norm = _projection(bias=False, affine=True, dtype=torch.float32)
    many = torch.randn(8, IN_CHANNELS, 2, 2)
    elsewhere = (many.to("meta"), copy.deepcopy(conv).to("meta"), copy.deepcopy(norm).to("meta"))
    with torch.no_grad():
        assert pooled_through_projection(many, conv, norm) is not None
        assert pooled_through_projection(*elsewhere) is None
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        pooled = pooled_through_projection(*elsewhere)
    assert pooled is not None and pooled.shape == (8, OUT_CHANNELS)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_equals_pooling_after_convolution_and_batchnorm(dtype, memory_format, bias, affine):
    conv, norm = _projection(bias, affine, dtype)
    z = (torch.randn(3, IN_CHANNELS, 5, 7) + 0.5).to(dtype=dtype, memory_format=memory_format)
    with torch.no_grad():
        pooled = pooled_through_projection(z, conv, norm)
        in_module_dtype = norm(conv(z)).mean((2, 3))
        conv64, norm64 = copy.deepcopy(conv).double(), copy.deepcopy(norm).double()
        in_float64 = norm64(conv64(z.double())).mean((2, 3))
    assert pooled is not None
    assert pooled.shape == (3, OUT_CHANNELS)
    assert pooled.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    _assert_close(pooled, in_float64, TOLERANCES[dtype])
    _assert_close(pooled, in_module_dtype, MODULE_DTYPE_TOLERANCES[dtype])


def test_running_statistics_and_affine_matter():
    """The check above would pass for a projection that skipped the BatchNorm if BatchNorm were the identity."""
    conv, norm = _projection(bias=True, affine=True, dtype=torch.float64)
    z = torch.randn(2, IN_CHANNELS, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        pooled = pooled_through_projection(z, conv, norm)
        assert not torch.allclose(pooled, conv(z).mean((2, 3)), atol=1e-3)
        norm.running_var.mul_(4)
        assert not torch.allclose(pooled_through_projection(z, conv, norm), pooled, atol=1e-3)


@pytest.mark.parametrize(
    ("conv", "norm"),
    [
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 3), nn.BatchNorm2d(OUT_CHANNELS).eval()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1, stride=2), nn.BatchNorm2d(OUT_CHANNELS).eval()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1, padding=1), nn.BatchNorm2d(OUT_CHANNELS).eval()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1, groups=2), nn.BatchNorm2d(OUT_CHANNELS).eval()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1), nn.BatchNorm2d(OUT_CHANNELS).train()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1), nn.BatchNorm2d(OUT_CHANNELS, track_running_stats=False).eval()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1), nn.GroupNorm(4, OUT_CHANNELS).eval()),
        (nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1), nn.Identity()),
    ],
    ids=["3x3", "stride-2", "padded", "grouped", "bn-training", "bn-no-running-stats", "group-norm", "no-norm"],
)
def test_declines_where_pooling_does_not_commute(conv, norm):
    z = torch.randn(2, IN_CHANNELS, 6, 6)
    assert pooled_through_projection(z, conv, norm) is None


def test_projection_declines_where_pooling_the_output_moves_more_values():
    """Pooling z and reading the weights, N * C_in * S + C_in * C_out values, against N * C_out * S."""
    conv, norm = _projection(bias=False, affine=True, dtype=torch.float32)
    few = torch.randn(2, IN_CHANNELS, 2, 2)  # 2 * 6 * 4 + 6 * 16 = 144 > 2 * 16 * 4 = 128
    many = torch.randn(8, IN_CHANNELS, 2, 2)  # 8 * 6 * 4 + 6 * 16 = 288 < 8 * 16 * 4 = 512
    with torch.no_grad():
        assert pooled_through_projection(few, conv, norm) is None
        assert pooled_through_projection(many, conv, norm) is not None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("affine", [True, False])
def test_pooled_through_norm_equals_pooling_after_batchnorm(dtype, memory_format, affine):
    _, norm = _projection(bias=False, affine=affine, dtype=dtype)
    y = (torch.randn(3, OUT_CHANNELS, 5, 7) + 0.5).to(dtype=dtype, memory_format=memory_format)
    with torch.no_grad():
        pooled = pooled_through_norm(y, norm)
        in_float64 = copy.deepcopy(norm).double()(y.double()).mean((2, 3))
    assert pooled.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    _assert_close(pooled, in_float64, TOLERANCES[dtype])


@pytest.mark.parametrize(
    "norm",
    [
        nn.BatchNorm2d(OUT_CHANNELS).train(),
        nn.BatchNorm2d(OUT_CHANNELS, track_running_stats=False).eval(),
        nn.GroupNorm(4, OUT_CHANNELS).eval(),
        nn.Identity(),
    ],
    ids=["bn-training", "bn-no-running-stats", "group-norm", "no-norm"],
)
def test_pooled_through_norm_declines_where_pooling_does_not_commute(norm):
    assert pooled_through_norm(torch.randn(2, OUT_CHANNELS, 4, 4), norm) is None


def test_a_dynamic_batch_export_of_a_bottleneck_network_takes_the_plain_pooling():
    # The detour's choice depends on the batch size; with a symbolic batch it would put a
    # constraint on it, which torch.export refuses (ECA-ResNet-50 could not be exported).
    model = create_model("eca_resnet50", width=8, small_input=True, num_classes=4).eval()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
        for size in (1, 5):
            x = torch.randn(size, 3, 32, 32)
            torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)
