import pytest
import torch

from ecanet.bench.baselines import BlogECA, attention_candidates, saturating_tap
from ecanet.bench.layers import TENSOR_PASSES, _training_step, benchmark_call, benchmark_layer, benchmark_tail
from reference import eca_reference


def test_blog_implementation_computes_eca():
    layer = BlogECA(3).double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    expected = eca_reference(x, layer.conv.weight.detach())
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7, 9])
def test_candidates_share_one_kernel_and_keep_benchmark_inputs_almost_unchanged(kernel_size):
    layers = attention_candidates(16, kernel_size)
    tap = saturating_tap(kernel_size)
    lowest = torch.full((2, 16, 3, 3), 0.5)  # the smallest logits an input in [0.5, 1.5) can give
    highest = torch.full((2, 16, 3, 3), 1.5)
    for name, layer in layers.items():
        if name != "se":
            assert torch.equal(layer.conv.weight.detach().flatten(), torch.full((kernel_size,), tap))
            with torch.no_grad():
                for x in (lowest, torch.rand(2, 16, 3, 3) + 0.5):
                    torch.testing.assert_close(layer(x.clone()), x, rtol=1e-6, atol=0)
    inner_logit = kernel_size * tap * highest.max().item()
    assert inner_logit < 87.0  # exp(-87) is the smallest normal float32


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


@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
def test_call_training_rows_time_steps_against_bare_pool_and_rescale(memory_format):
    rows = benchmark_call((2, 16, 4, 4), memory_format, "float32", "training", rounds=2, warmup=0)
    names = [r.candidate for r in rows]
    assert names[:2] == ["pool+rescale", "ecanet"] and "copy" not in names and "ecanet-inplace" not in names
    assert all(r.reference == "pool+rescale" and r.mode == "training" and r.median_ms > 0 for r in rows)
    assert TENSOR_PASSES[("call", "training")] == TENSOR_PASSES[("layer", "training")]


def test_training_step_frees_the_gradients_it_made():
    # Candidates share their input: a step must leave no gradient for the next candidate to free.
    weight = torch.randn(3, requires_grad=True)
    x = torch.randn(2, 3, requires_grad=True)
    made = {}
    for name, leaf in (("x", x), ("weight", weight)):
        leaf.register_post_accumulate_grad_hook(lambda leaf, name=name: made.update({name: leaf.grad.clone()}))
    _training_step(lambda: x * weight, [x, weight], torch.ones(2, 3))()
    assert x.grad is None and weight.grad is None
    torch.testing.assert_close(made["x"], weight.detach().expand(2, 3))
    torch.testing.assert_close(made["weight"], x.detach().sum(0))
