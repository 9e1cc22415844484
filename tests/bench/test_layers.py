import pytest
import torch

from ecanet.bench.baselines import BlogECA, attention_candidates
from ecanet.bench.layers import TENSOR_PASSES, benchmark_call, benchmark_layer, benchmark_tail
from reference import eca_reference


def test_blog_implementation_computes_eca():
    layer = BlogECA(3).double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    expected = eca_reference(x, layer.conv.weight.detach())
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_candidates_share_one_kernel_and_keep_positive_inputs_almost_unchanged():
    layers = attention_candidates(16, 3)
    x = torch.rand(2, 16, 3, 3) + 0.5
    for name, layer in layers.items():
        if name != "se":
            assert torch.equal(layer.conv.weight.detach().flatten(), torch.full((3,), 8.0))
            with torch.no_grad():
                torch.testing.assert_close(layer(x.clone()), x, rtol=1e-6, atol=0)


@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
def test_layer_rows(mode, memory_format):
    rows = benchmark_layer((2, 16, 4, 4), memory_format, "float32", mode, rounds=2, warmup=0)
    names = [r.candidate for r in rows]
    assert "copy" not in names and "ecanet" in names and "blog" in names and "se" in names
    assert ("ecanet-inplace" in names) == (mode == "inference")
    reference = rows[0].reference
    assert reference in names
    for r in rows:
        assert r.case == "2x16x4x4" and r.mode == mode and r.rounds == 2
        assert r.median_ms > 0 and r.floor_ms > 0 and r.reference_ms == rows[names.index(reference)].median_ms


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_tail_rows_and_floor_passes(mode):
    rows = benchmark_tail((2, 16, 4, 4), "nchw", "bfloat16", mode, rounds=1, warmup=0)
    assert [r.candidate for r in rows][:2] == ["none", "ecanet"]
    assert all(r.reference == "none" and r.dtype == "bfloat16" for r in rows)
    assert TENSOR_PASSES[("tail", mode)] > TENSOR_PASSES[("layer", mode)]


@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
def test_call_rows_measure_against_bare_pool_and_rescale(memory_format):
    rows = benchmark_call((2, 16, 4, 4), memory_format, "float32", rounds=2, warmup=0)
    names = [r.candidate for r in rows]
    assert names[:3] == ["pool+rescale", "ecanet-inplace", "ecanet"] and "copy" not in names
    assert all(r.reference == "pool+rescale" and r.mode == "inference" and r.floor_ms > 0 for r in rows)
    assert TENSOR_PASSES[("call", "inference")] == 3
