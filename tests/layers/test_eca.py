import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from batchnorm_statistics import with_random_statistics
from ecanet import ECA
from ecanet.functional import eca
from reference import eca_reference

OPTIONS = list(
    itertools.product(
        ["zeros", "circular"],  # padding
        ["avg", "avgmax"],  # pooling
        ["sigmoid", "hard_sigmoid"],  # gate
        [True, False],  # shared
        [1, -1],  # channel_dim
    )
)
OPTION_IDS = [f"{p}-{pool}-{g}-{'shared' if s else 'ns'}-cdim{c}" for p, pool, g, s, c in OPTIONS]
SPATIAL = {"1d": (9,), "2d": (5, 4), "3d": (3, 4, 2)}


def _layer(channels, padding, pooling, gate, shared, channel_dim, kernel_size=None, dtype=torch.float64):
    layer = ECA(
        channels,
        kernel_size,
        padding=padding,
        pooling=pooling,
        gate=gate,
        shared=shared,
        channel_dim=channel_dim,
        dtype=dtype,
    )
    # Larger weights than the default init so the gate is far from constant and errors show.
    nn.init.normal_(layer.conv.weight, std=1.0)
    return layer


def _input(batch, channels, spatial, channel_dim, dtype=torch.float64):
    shape = (batch, channels, *spatial) if channel_dim == 1 else (batch, *spatial, channels)
    return torch.randn(shape, dtype=dtype)


def _reference(layer, x):
    return eca_reference(x, layer.conv.weight, layer.padding, layer.pooling, layer.gate, layer.channel_dim)


@pytest.mark.parametrize("rank", list(SPATIAL))
@pytest.mark.parametrize(("padding", "pooling", "gate", "shared", "channel_dim"), OPTIONS, ids=OPTION_IDS)
def test_forward_matches_float64_reference(rank, padding, pooling, gate, shared, channel_dim):
    layer = _layer(12, padding, pooling, gate, shared, channel_dim, kernel_size=5)
    x = _input(3, 12, SPATIAL[rank], channel_dim)
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("padding", "pooling", "gate", "shared", "channel_dim"), OPTIONS, ids=OPTION_IDS)
def test_gradcheck(padding, pooling, gate, shared, channel_dim):
    weight = _layer(6, padding, pooling, gate, shared, channel_dim, kernel_size=3).conv.weight
    x = _input(2, 6, (3, 2), channel_dim).requires_grad_()

    def run(inp, w):
        return eca(inp, w, padding, pooling, gate, channel_dim)

    assert torch.autograd.gradcheck(run, (x, weight.detach().clone().requires_grad_()))


@pytest.mark.parametrize(("padding", "pooling", "gate", "shared", "channel_dim"), OPTIONS, ids=OPTION_IDS)
def test_float32_backward_matches_reference_gradients(padding, pooling, gate, shared, channel_dim):
    layer = _layer(16, padding, pooling, gate, shared, channel_dim, kernel_size=5, dtype=torch.float32)
    x = _input(2, 16, (6, 5), channel_dim, dtype=torch.float32).requires_grad_()
    grad_out = torch.randn_like(x)
    layer(x).backward(grad_out)
    x64 = x.detach().double().requires_grad_()
    w64 = layer.conv.weight.detach().double().requires_grad_()
    eca_reference(x64, w64, padding, pooling, gate, channel_dim).backward(grad_out.double())
    torch.testing.assert_close(x.grad, x64.grad.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.conv.weight.grad, w64.grad.float(), rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 40),
    spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    kernel_size=st.sampled_from([1, 3, 5, 7]),
    padding=st.sampled_from(["zeros", "circular"]),
    channel_dim=st.sampled_from([1, -1]),
)
def test_random_shapes_match_reference(batch, channels, spatial, kernel_size, padding, channel_dim):
    if padding == "circular" and kernel_size // 2 > channels:
        kernel_size = 1
    layer = _layer(channels, padding, "avg", "sigmoid", True, channel_dim, kernel_size=kernel_size)
    x = _input(batch, channels, spatial, channel_dim)
    out = layer(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _reference(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("memory_format", "shape"),
    [(torch.channels_last, (2, 16, 5, 6)), (torch.channels_last_3d, (2, 16, 3, 4, 5))],
)
def test_memory_format_is_preserved(memory_format, shape):
    layer = _layer(16, "zeros", "avg", "sigmoid", True, 1, dtype=torch.float32)
    x = torch.randn(shape).to(memory_format=memory_format)
    out = layer(x)
    assert out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out, _reference(layer, x).float(), rtol=1e-5, atol=1e-6)


# Half types: output keeps the dtype; error is dominated by rounding the output (8 bits of mantissa
# for bf16: ~4e-3 relative; 11 bits for fp16: ~5e-4 relative).
@pytest.mark.parametrize(("dtype", "rtol", "atol"), [(torch.bfloat16, 1.6e-2, 1e-2), (torch.float16, 2e-3, 1e-3)])
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_half_precision(dtype, rtol, atol, channel_dim):
    layer = _layer(32, "zeros", "avg", "sigmoid", True, channel_dim, dtype=torch.float32)
    x = _input(2, 32, (7, 7), channel_dim, dtype=torch.float32).to(dtype)
    out = layer.to(dtype)(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), _reference(layer, x), rtol=rtol, atol=atol)


def test_half_precision_descriptor_is_accumulated_in_float32():
    from ecanet.functional import eca_descriptor

    # 4096 values of 1 + 2^-7 plus 1: a bf16 running sum loses the small parts entirely.
    x = torch.full((1, 2, 64, 64), 1.0 + 2.0**-7, dtype=torch.bfloat16)
    descriptor = eca_descriptor(x)
    assert descriptor.dtype == torch.float32
    torch.testing.assert_close(descriptor, torch.full((1, 2), 1.0 + 2.0**-7), rtol=1e-6, atol=0)


@pytest.mark.parametrize("rank", list(SPATIAL))
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_samples_never_influence_each_other(rank, channel_dim):
    # The official layer mixes samples on (N, C, L) input; ours must not, for any rank.
    layer = _layer(8, "zeros", "avg", "sigmoid", True, channel_dim)
    x = _input(4, 8, SPATIAL[rank], channel_dim)
    before = layer(x)
    x[2] += 10 * torch.randn_like(x[2])
    after = layer(x)
    for sample in (0, 1, 3):
        assert torch.equal(before[sample], after[sample])
    assert not torch.equal(before[2], after[2])


def test_batch_of_one_equals_batched_result():
    layer = _layer(10, "circular", "avgmax", "sigmoid", True, 1)
    x = torch.randn(5, 10, 7, dtype=torch.float64)
    batched = layer(x)
    for i in range(5):
        torch.testing.assert_close(layer(x[i : i + 1])[0], batched[i], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "expected_k"),
    [({"channels": 256}, 5), ({"channels": 2048}, 7), ({"channels": 4}, 1), ({}, 3), ({"kernel_size": 9}, 9)],
)
def test_kernel_size_resolution(kwargs, expected_k):
    layer = ECA(**kwargs)
    assert layer.kernel_size == expected_k
    assert layer.conv.weight.shape == (1, 1, expected_k)
    assert sum(p.numel() for p in layer.parameters()) == expected_k


def test_gamma_and_beta_reach_the_rule():
    assert ECA(256, gamma=1.0, beta=0.0).kernel_size == 9


def test_non_shared_has_k_times_c_weights():
    layer = ECA(64, shared=False)
    assert layer.conv.weight.shape == (64, 1, 3)
    assert not layer.shared


def test_repr_shows_configuration():
    assert repr(ECA(256)) == "ECA(256, k=5, padding=zeros, pooling=avg, gate=sigmoid)"
    text = repr(ECA(kernel_size=3, padding="circular", pooling="avgmax", gate="hard_sigmoid", channel_dim=-1))
    assert text == "ECA(k=3, padding=circular, pooling=avgmax, gate=hard_sigmoid, channel_dim=-1)"
    assert "shared=False" in repr(ECA(8, shared=False))


def test_reset_parameters_draws_within_conv1d_bound():
    torch.manual_seed(0)
    layer = ECA(kernel_size=9)
    nn.init.constant_(layer.conv.weight, 5.0)
    layer.reset_parameters()
    assert layer.conv.weight.abs().max() <= 1 / 3
    assert layer.conv.weight.std() > 0


def test_meta_device_and_dtype_factory_kwargs():
    layer = ECA(128, device="meta", dtype=torch.float16)
    assert layer.conv.weight.is_meta
    assert layer.conv.weight.dtype == torch.float16


def test_loads_a_state_dict_saved_from_the_official_layout():
    class OfficialStyle(nn.Module):
        """The layout of the authors' layer: AdaptiveAvgPool2d + Conv1d(1, 1, k) under `conv`."""

        def __init__(self, k):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

        def forward(self, x):
            y = self.avg_pool(x)
            y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
            return x * torch.sigmoid(y).expand_as(x)

    official = OfficialStyle(5)
    ours = ECA(kernel_size=5)
    ours.load_state_dict(official.state_dict())
    x = torch.randn(3, 32, 6, 6)
    torch.testing.assert_close(ours(x), official(x), rtol=1e-6, atol=1e-6)


def test_loads_timm_eca_weights():
    timm_layers = pytest.importorskip("timm.layers")
    theirs = timm_layers.EcaModule(channels=256)
    ours = ECA(256)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 256, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ECA(kernel_size=4), "kernel_size must be odd"),
        (lambda: ECA(kernel_size=0), "kernel_size must be a positive odd int"),
        (lambda: ECA(kernel_size=3.0), "kernel_size must be a positive odd int"),
        (lambda: ECA(0), "channels must be a positive int"),
        (lambda: ECA("64"), "channels must be a positive int"),
        (lambda: ECA(64, padding="reflect"), "padding must be one of"),
        (lambda: ECA(64, pooling="max"), "pooling must be one of"),
        (lambda: ECA(64, gate="relu"), "gate must be one of"),
        (lambda: ECA(64, channel_dim=2), "channel_dim must be 1"),
        (lambda: ECA(shared=False), "shared=False .* needs channels"),
        (lambda: ECA(2, kernel_size=7, padding="circular"), "circular padding needs"),
    ],
)
def test_constructor_errors_name_the_problem(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("layer", "x", "error", "message"),
    [
        (ECA(8), torch.randn(8, 5), ValueError, "3 or more dims"),
        (ECA(), torch.randn(8), ValueError, "batched input"),
        (ECA(8), torch.randn(2, 16, 5, 5), ValueError, "built for 8 channels but the input has 16"),
        (ECA(8, channel_dim=-1), torch.randn(2, 5, 16), ValueError, "built for 8 channels but the input has 16"),
        (ECA(8), torch.ones(2, 8, 5, dtype=torch.long), TypeError, "floating-point input"),
        (ECA(kernel_size=7, padding="circular"), torch.randn(2, 2, 5), ValueError, "circular padding needs"),
    ],
)
def test_forward_errors_name_the_problem(layer, x, error, message):
    with pytest.raises(error, match=message):
        layer(x)


def test_torchscript_matches_eager():
    layer = ECA(24, padding="circular", pooling="avgmax", shared=False, channel_dim=-1)
    scripted = torch.jit.script(layer)
    x = torch.randn(2, 9, 24)
    torch.testing.assert_close(scripted(x), layer(x), rtol=1e-6, atol=1e-7)


def test_torch_compile_fullgraph_matches_eager():
    layer = ECA(32)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(2, 32, 6, 6, requires_grad=True)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x), rtol=1e-6, atol=1e-7)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_torch_export_matches_eager():
    layer = ECA(32, pooling="avgmax")
    x = torch.randn(2, 32, 5, 5)
    exported = torch.export.export(layer, (x,))
    fresh = torch.randn(2, 32, 5, 5)
    torch.testing.assert_close(exported.module()(fresh), layer(fresh), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("grad_mode", [False, True])
@pytest.mark.parametrize("shortcut", [True, False])
def test_after_norm_runs_the_norm_as_a_module_off_the_gpu(training, grad_mode, shortcut):
    # Where the norm is not folded into the rescale (here: CPU tensors) it runs as a module: its
    # hooks fire and in training mode its running statistics move exactly as a separate call's.
    torch.manual_seed(0)
    layer = ECA(16)
    norm = with_random_statistics(nn.BatchNorm2d(16).train(training))
    twin = with_random_statistics(nn.BatchNorm2d(16).train(training))
    twin.load_state_dict(norm.state_dict())
    x, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    seen = []
    norm.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        expected = eca_reference(twin(x).double(), layer.conv.weight.double())
        expected = torch.relu(expected + identity.double()) if shortcut else expected
    with torch.set_grad_enabled(grad_mode):
        out = layer.residual_after_norm(x.clone(), norm, identity) if shortcut else layer.after_norm(x, norm)
    assert seen == [x.shape]
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.running_mean, twin.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(norm.running_var, twin.running_var, rtol=0, atol=0)


def test_residual_after_norm_takes_the_normalized_mean_as_descriptor():
    torch.manual_seed(0)
    layer, norm = ECA(16), with_random_statistics(nn.BatchNorm2d(16).eval())
    x, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        normalized = norm(x)
        descriptor = normalized.mean((2, 3))
        out = layer.residual_after_norm(x, norm, identity, descriptor=descriptor)
    expected = torch.relu(eca_reference(normalized.double(), layer.conv.weight.double()) + identity.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


class _FxTail(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.eca = ECA(16)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return self.eca.residual(x * 1.0, identity)


def test_torch_fx_records_one_checked_call_per_layer():
    # A symbolic trace cannot branch on the input, so the layer records its checked call as one
    # node; the graph checks the channel count and computes (fast path included) when it runs.
    torch.manual_seed(0)
    layer, tail = ECA(16), _FxTail()
    for module in (layer, tail):
        calls = [node for node in torch.fx.symbolic_trace(module).graph.nodes if node.op == "call_function"]
        assert [node.target.__name__ for node in calls if "checked" in node.target.__name__] == [
            "_checked_eca" if module is layer else "_checked_eca_residual"
        ]
    x, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    traced, traced_tail = torch.fx.symbolic_trace(layer), torch.fx.symbolic_trace(tail)
    torch.testing.assert_close(traced(x), layer(x), rtol=0, atol=0)
    torch.testing.assert_close(traced_tail(x, identity), tail(x, identity), rtol=0, atol=0)
    expected = torch.relu(eca_reference(x.double(), tail.eca.conv.weight.double()) + identity.double())
    torch.testing.assert_close(traced_tail(x, identity).double(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="built for 16 channels but the input has 8"):
        traced(torch.randn(2, 8, 5, 5))


class _Negated(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return -weight


@pytest.mark.parametrize("residual", [False, True])
def test_a_parametrized_kernel_is_what_the_fast_path_reads(residual):
    # The eager route reads the kernel from the modules' dictionaries; a parametrized one is not
    # there and must be computed, not taken from its unparametrized original.
    layer = _layer(16, "zeros", "avg", "sigmoid", True, 1).eval()
    nn.utils.parametrize.register_parametrization(layer.conv, "weight", _Negated())
    x, identity = torch.randn(2, 16, 5, 4, dtype=torch.float64), torch.randn(2, 16, 5, 4, dtype=torch.float64)
    expected = eca_reference(x, layer.conv.weight.detach())
    with torch.no_grad():
        if residual:
            out, expected = layer.residual(x.clone(), identity), torch.relu(expected + identity)
        else:
            out = layer(x)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("grad_mode", [False, True])
@pytest.mark.parametrize("activation", ["relu", "none"])
@pytest.mark.parametrize("through_norm", [False, True])
def test_residual_tails_run_the_layer_as_a_module_for_its_hooks(grad_mode, activation, through_norm):
    # A fused tail skips the module call; while the layer has hooks they must see it run, with
    # its input and output, and an output a hook returns must replace the layer's.
    torch.manual_seed(0)
    layer, norm = ECA(16), with_random_statistics(nn.BatchNorm2d(16).eval())
    y, identity = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    x = norm(y).detach() if through_norm else y
    seen = {}
    layer.register_forward_pre_hook(lambda module, args: seen.update(input=args[0].clone()))
    layer.register_forward_hook(lambda module, args, out: seen.update(output=out.clone()) or 2 * out)
    with torch.set_grad_enabled(grad_mode):
        tail = layer.residual_after_norm(y.clone(), norm, identity, activation) if through_norm else None
        out = tail if through_norm else layer.residual(y.clone(), identity, activation)
    expected_output = eca_reference(x, layer.conv.weight)
    expected = 2 * expected_output + identity.double()
    expected = torch.relu(expected) if activation == "relu" else expected
    torch.testing.assert_close(seen["input"], x, rtol=0, atol=0)
    torch.testing.assert_close(seen["output"].double(), expected_output, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_residual_with_hooks_rejects_an_unknown_activation():
    layer = ECA(8)
    layer.register_forward_hook(lambda module, args, out: None)
    with pytest.raises(ValueError, match="activation"):
        layer.residual(torch.randn(1, 8, 3, 3), torch.randn(1, 8, 3, 3), activation="gelu")
