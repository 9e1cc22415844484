"""Checks that need a CUDA GPU: the layer and the networks on CUDA against float64 CPU references.

Not collected by a plain ``pytest`` run (the name does not start with ``test_``; CI has no GPU and
covers the same kernels in Triton's interpreter). ``make gpu-check`` runs this module together
with ``triton_kernel_checks.py`` compiled for the GPU.
"""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from ecanet import ECA
from ecanet.models import create_model
from ecanet.models.resnet import use_projected_gate
from ecanet.ops import dispatch, prepared_calls, triton_kernels
from ecanet.ops.composed import ComposedKernels
from ecanet.ops.dispatch import kernels_for
from ecanet.ops.triton_backend import TritonKernels
from reference import eca_reference

if not torch.cuda.is_available():
    raise RuntimeError("cuda_checks.py needs a CUDA GPU; without one, the interpreter checks cover the kernels")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _exact_float32():
    """float32 convolutions and products without TF32, so networks can be compared closely.

    Newer PyTorch releases take the precision per backend (``fp32_precision``); there, setting the
    older ``allow_tf32`` flags to ``False`` leaves the convolutions' setting at ``"none"`` (inherit)
    rather than ``"ieee"``, so the new settings are set explicitly where they exist. (TF32 rounds
    products to about 1e-3, which would swamp these comparisons.)
    """
    backends = torch.backends
    if hasattr(backends.cudnn, "conv") and hasattr(backends.cudnn.conv, "fp32_precision"):
        settings = (backends.cudnn.conv, backends.cudnn.rnn, backends.cuda.matmul)
        saved = [setting.fp32_precision for setting in settings]
        for setting in settings:
            setting.fp32_precision = "ieee"
        yield
        for setting, precision in zip(settings, saved, strict=True):
            setting.fp32_precision = precision
        return
    saved = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
    backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False
    yield
    backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved


def test_cuda_tensors_take_the_triton_backend():
    assert isinstance(kernels_for(torch.zeros(1, device=CUDA)), TritonKernels)


def test_switched_off_triton_leaves_cuda_tensors_to_aten_kernels(monkeypatch):
    dispatch._cuda_takes_triton.cache_clear()
    monkeypatch.setenv(dispatch.TRITON_SWITCH, "0")
    try:
        kernels = kernels_for(torch.zeros(1, device=CUDA))
        assert isinstance(kernels, ComposedKernels)
        torch.manual_seed(0)
        x = torch.randn(2, 64, 7, 7, device=CUDA, requires_grad=True)
        layer = ECA(64).to(CUDA)
        layer(x).backward(torch.ones_like(x))
        x64 = x.detach().cpu().double().requires_grad_()
        eca_reference(x64, layer.conv.weight.detach().cpu().double()).backward(torch.ones_like(x64))
        torch.testing.assert_close(x.grad.cpu().double(), x64.grad, rtol=1e-4, atol=1e-5)
    finally:
        dispatch._cuda_takes_triton.cache_clear()


def _kernels_launched(run) -> list[str]:
    """Names of the GPU kernels ``run()`` launches (the profiler's own events left out)."""
    run()
    torch.cuda.synchronize()
    for _ in range(2):  # the first profile in a process also records the profiler's buffer setup
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            run()
            torch.cuda.synchronize()
    events = [event for event in trace.events() if event.device_type.name == "CUDA"]
    return [event.name for event in events if not event.name.startswith("Activity Buffer")]


def test_forward_is_two_triton_launches():
    layer = ECA(256).to(CUDA)
    x = torch.randn(8, 256, 14, 14, device=CUDA)
    with torch.no_grad():
        kernels = _kernels_launched(lambda: layer(x))
    assert len(kernels) == 2, kernels
    assert "channel_reduce_kernel" in kernels[0] and "channel_affine_kernel" in kernels[1], kernels


@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("prepared", [False, True])
def test_training_step_launches_no_gate_operators(tail, prepared):
    layer = ECA(256).to(CUDA)
    x = torch.randn(8, 256, 14, 14, device=CUDA, requires_grad=True)
    shortcut = torch.randn(8, 256, 14, 14, device=CUDA, requires_grad=True)

    def step():
        x.grad = shortcut.grad = layer.conv.weight.grad = None
        # The tail overwrites the branch output (x * 1.0) and recovers x * gate in the backward.
        out = layer.residual(x * 1.0, shortcut) if tail else layer(x)
        out.sum().backward()

    if prepared:
        step()  # the checked call: the profiled one repeats it
    kernels = _kernels_launched(step)
    triton = [name for name in kernels if name.endswith("_kernel")]
    assert len(triton) == 4, kernels  # mean, rescale; gradient sums, input gradient with the gate's backward
    # Plus the loss's sum and fill, the expanded loss gradient's copy, the kernel gradient's sum
    # (and the tail's x * 1.0 and its backward): no subtraction pass, no gate operators.
    assert len(kernels) <= (11 if tail else 9), kernels


SHAPES = {
    "1d": ((4, 64, 500), torch.contiguous_format, 1),
    "2d": ((4, 96, 20, 20), torch.contiguous_format, 1),
    "2d-channels-last": ((4, 96, 20, 20), torch.channels_last, 1),
    "3d": ((2, 48, 6, 7, 8), torch.contiguous_format, 1),
    "3d-channels-last": ((2, 48, 6, 7, 8), torch.channels_last_3d, 1),
    "tokens": ((3, 197, 384), torch.contiguous_format, -1),
    "large-7x7": ((64, 2048, 7, 7), torch.channels_last, 1),
    "large-56x56": ((32, 256, 56, 56), torch.contiguous_format, 1),
}


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual", [False, True])
def test_layer_matches_reference_forward_and_backward(shape_name, dtype, residual):
    shape, memory_format, channel_dim = SHAPES[shape_name]
    channels = shape[channel_dim]
    layer = ECA(channels, channel_dim=channel_dim).to(CUDA)
    x = torch.randn(shape, device=CUDA).to(dtype=dtype, memory_format=memory_format).requires_grad_()
    identity = torch.randn(shape, device=CUDA).to(dtype=dtype, memory_format=memory_format).requires_grad_()
    grad = torch.randn(shape, device=CUDA).to(dtype=dtype, memory_format=memory_format)
    out = layer.residual(x * 1.0, identity, inplace=False) if residual else layer(x)
    out.backward(grad)

    x64, id64 = x.detach().cpu().double().requires_grad_(), identity.detach().cpu().double().requires_grad_()
    w64 = layer.conv.weight.detach().cpu().double().requires_grad_()
    expected = eca_reference(x64, w64, channel_dim=channel_dim)
    if residual:  # the ReLU's mask from the tested output: low precision may round a tiny value to 0
        expected = (expected + id64) * (out.detach().cpu() > 0)
    expected.backward(grad.cpu().double())
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 3e-2, "atol": 3e-2}
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out.detach().cpu().double(), expected, **tolerance)
    torch.testing.assert_close(x.grad.cpu().double(), x64.grad, **tolerance)
    weight_scale = w64.grad.abs().max().item()
    torch.testing.assert_close(layer.conv.weight.grad.cpu().double(), w64.grad, rtol=3e-2, atol=3e-2 * weight_scale)
    if residual:
        torch.testing.assert_close(identity.grad.cpu().double(), id64.grad, **tolerance)


@pytest.mark.parametrize("name", ["eca_resnet50", "eca_mobilenet_v2"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_network_inference_matches_float64_cpu(name, memory_format):
    # The first call takes the checked path (each block's last BatchNorm a module of its own), the
    # second the prepared one (that BatchNorm applied inside ECA's rescale).
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(4, 3, 160, 160)
    with torch.inference_mode():
        expected = model.double()(x.double())
        model = model.float().to(CUDA, memory_format=memory_format)
        for _ in range(2):
            got = model(x.to(CUDA, memory_format=memory_format))
            torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("name", "blocks"), [("eca_resnet50", 16), ("eca_mobilenet_v2", 17)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inference_folds_each_blocks_last_batchnorm_into_ecas_rescale(name, blocks, memory_format):
    # A forward hook on a BatchNorm makes it run as a module (the hook must see it): with hooks on
    # all of them the same network launches one BatchNorm more per block, and gives the same result.
    torch.manual_seed(0)
    model = create_model(name).eval().to(CUDA, memory_format=memory_format)
    x = torch.randn(4, 3, 96, 96, device=CUDA).to(memory_format=memory_format)
    norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    y = torch.randn(4, norms[0].num_features, 24, 24, device=CUDA).to(memory_format=memory_format)
    with torch.no_grad():
        one_norm = len(_kernels_launched(lambda: norms[0](y)))
        folded = _kernels_launched(lambda: model(x))
        folded_out = model(x)
        hooks = [norm.register_forward_hook(lambda module, args, out: None) for norm in norms]
        try:
            unfolded = _kernels_launched(lambda: model(x))
            unfolded_out = model(x)
        finally:
            for hook in hooks:
                hook.remove()
    assert len(unfolded) - len(folded) == blocks * one_norm, (len(unfolded), len(folded), one_norm)
    torch.testing.assert_close(folded_out, unfolded_out, rtol=1e-4, atol=1e-4)


def test_compiled_network_matches_eager():
    torch.manual_seed(0)
    model = create_model("eca_resnet18").eval().to(CUDA, memory_format=torch.channels_last)
    x = torch.randn(4, 3, 64, 64, device=CUDA).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("memory_format", "dtype"),
    [
        (torch.contiguous_format, torch.float32),
        (torch.channels_last, torch.float32),
        (torch.channels_last, torch.bfloat16),
    ],
)
def test_compiled_network_through_the_projected_gate_matches_eager(memory_format, dtype):
    # Each bottleneck's activation, its sums and ECA's gate from Triton kernels between inductor's.
    torch.manual_seed(0)
    model = create_model("eca_resnet50").eval().to(CUDA, dtype, memory_format=memory_format)
    x = torch.randn(4, 3, 160, 160, device=CUDA).to(dtype=dtype, memory_format=memory_format)
    with torch.inference_mode():
        eager = model(x)
        assert use_projected_gate(model) == 16
        compiled = torch.compile(model, fullgraph=True)
        launched = _kernels_launched(lambda: compiled(x))
        got = compiled(x)
    torch._dynamo.reset()
    assert sum("norm_relu_sums_kernel" in name for name in launched) == 16, launched
    assert sum("projected_gate_kernel" in name for name in launched) == 16, launched
    scale = eager.abs().max().item()
    tolerance = 5e-2 if dtype == torch.bfloat16 else 1e-3
    torch.testing.assert_close(got.float(), eager.float(), rtol=0, atol=tolerance * scale)


def test_direct_launches_match_across_specialisations():
    # Offset 1 leaves the pointer off 16-byte alignment: another specialisation, compiled on its
    # first launch and launched directly on the second.
    launcher = triton_kernels._launcher("channel_reduce_kernel")
    for offset in (0, 1):
        memory = torch.randn(8 * 64 * 49 + 1, device=CUDA)
        x3 = memory[offset : offset + 8 * 64 * 49].view(8, 64, 49)
        for _ in range(2):
            torch.testing.assert_close(triton_kernels.channel_mean(x3, 1), x3.mean(2), rtol=1e-5, atol=1e-6)
    aligned = {key for key in launcher._compiled if key[0] == x3.device.index}
    assert len({key[2][1] for key in aligned}) == 2, aligned  # both alignments were kept


def test_bound_launches_match_planned_ones_aligned_or_not():
    # A bound launch passes addresses as integers once a launch with aligned ones kept its kernel;
    # an unaligned input (offset 1) goes through the planned launch, keyed in full.
    shape = triton_kernels.geometry(torch.empty(8, 64, 49, device=CUDA), 1)
    bound = triton_kernels._mean_reduction(shape, CUDA, torch.float32).bound()
    memory = torch.randn(8 * 64 * 49 + 1, device=CUDA)
    for offset in (0, 0, 1, 0):
        x3 = memory[offset : offset + 8 * 64 * 49].view(8, 64, 49)
        torch.testing.assert_close(bound(x3), x3.mean(2), rtol=1e-5, atol=1e-6)
    assert bound.launch._compiled is not None


def test_launch_hooks_see_every_launch():
    from triton import knobs

    seen = []
    x3 = torch.randn(4, 32, 9, device=CUDA)
    triton_kernels.channel_mean(x3, 1)  # compiled and kept
    bound = triton_kernels._mean_reduction(triton_kernels.geometry(x3, 1), CUDA, x3.dtype).bound()
    bound(x3)  # kept by the bound launch too
    chain = knobs.runtime.launch_enter_hook
    if hasattr(chain, "add"):  # Triton >= 3.5: a chain of hooks
        chain.add(seen.append)
    else:
        knobs.runtime.launch_enter_hook = seen.append
    try:
        for _ in range(3):
            triton_kernels.channel_mean(x3, 1)
            bound(x3)
    finally:
        if hasattr(chain, "remove"):
            chain.remove(seen.append)
        knobs.runtime.launch_enter_hook = chain
    assert len(seen) == 6


def test_repeated_inference_calls_are_prepared_and_still_checked():
    layer = ECA(256).to(CUDA)
    x = torch.randn(4, 256, 7, 7, device=CUDA).to(memory_format=torch.channels_last)
    weight = layer.conv.weight
    key = prepared_calls.call_key(x, weight, None, None, False, False, layer.padding, layer.gate, 1)
    with torch.no_grad():
        first = layer(x)
        assert key in prepared_calls._prepared
        second = layer(x)
        torch.testing.assert_close(second, first, rtol=0, atol=0)
        expected = eca_reference(x.double().cpu(), weight.double().cpu())
        torch.testing.assert_close(second.double().cpu(), expected, rtol=1e-5, atol=1e-5)
        other = ECA(128).to(CUDA)  # same kernel size, so the same key: the channel count is checked per call
        with pytest.raises(ValueError, match="built for 128 channels"):
            other(x)
    out = layer(x.requires_grad_())  # recording a graph: the same key, through the autograd Function
    assert out.grad_fn is not None


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_repeated_training_calls_are_prepared_and_still_checked(memory_format):
    layer = ECA(256).to(CUDA)
    shape = (4, 256, 7, 7)
    source = torch.randn(shape, device=CUDA).to(memory_format=memory_format).requires_grad_()
    shortcut = torch.randn(shape, device=CUDA).to(memory_format=memory_format).requires_grad_()
    grad = torch.randn(shape, device=CUDA)
    weight = layer.conv.weight
    key = prepared_calls.call_key(source, weight, shortcut, None, True, True, layer.padding, layer.gate, 1)
    gradients = []
    # The checked call, the prepared one (its launches keyed in full), then one whose launches go
    # straight to the kernels kept by the first (BoundLaunch).
    for _ in range(3):
        source.grad = shortcut.grad = weight.grad = None
        branch = source * 1.0
        out = layer.residual(branch, shortcut)
        assert key in prepared_calls._prepared and out is branch  # the branch output is overwritten
        out.backward(grad)
        gradients.append([tensor.grad.clone() for tensor in (source, shortcut, weight)])
    for first, *later in zip(*gradients, strict=True):
        for again in later:
            torch.testing.assert_close(again, first, rtol=0, atol=0)
    x_ref, id_ref, w_ref = (t.detach().double().cpu().requires_grad_() for t in (source, shortcut, weight))
    torch.relu(eca_reference(x_ref, w_ref) + id_ref).backward(grad.double().cpu())
    for got, expected in zip(gradients[2], (x_ref, id_ref, w_ref), strict=True):
        torch.testing.assert_close(got.double().cpu(), expected.grad, rtol=1e-4, atol=1e-4)
    other = ECA(128).to(CUDA)  # same kernel size, so the same key: the channel count is checked per call
    with pytest.raises(ValueError, match="built for 128 channels"):
        other.residual(source * 1.0, shortcut)


def test_in_place_inference_writes_are_seen_by_autograd():
    layer = ECA(256, inplace=True).to(CUDA)
    for _ in range(2):  # the checked call, then the prepared one
        source = torch.randn(4, 256, 7, 7, device=CUDA, requires_grad=True)
        y = source.sigmoid()  # its backward needs y
        with torch.no_grad():
            version = y._version
            assert layer(y) is y and y._version == version + 1
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_kernel_on_the_cpu_is_named_as_a_device_mismatch():
    layer = ECA(256)  # left on the CPU
    with torch.no_grad(), pytest.raises(RuntimeError, match="ECA kernel is on cpu but the input is on cuda"):
        layer(torch.randn(2, 256, 7, 7, device=CUDA))


def test_network_inference_replays_from_a_cuda_graph():
    # Captured after a warm-up (kernels compiled, calls prepared), ECA's launches and buffers are
    # recorded like any operator's: a replay on new input gives the eager result.
    torch.manual_seed(0)
    model = create_model("eca_resnet18").eval().to(CUDA, memory_format=torch.channels_last)
    static = torch.randn(4, 3, 64, 64, device=CUDA).to(memory_format=torch.channels_last)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode():
        with torch.cuda.stream(side):
            for _ in range(3):
                model(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = model(static)
        fresh = torch.randn_like(static)
        static.copy_(fresh)
        graph.replay()
        expected = model(fresh)
    torch.testing.assert_close(captured, expected, rtol=1e-5, atol=1e-5)


def test_layer_training_step_replays_from_cuda_graphs():
    # Forward and backward of the autograd Function captured as graphs of their own.
    torch.manual_seed(0)
    layer = ECA(256).to(CUDA)
    x = torch.randn(8, 256, 14, 14, device=CUDA, requires_grad=True)
    graphed = torch.cuda.make_graphed_callables(layer, (x,))
    fresh, grad = torch.randn_like(x), torch.randn_like(x)
    source = fresh.clone().requires_grad_()
    layer.conv.weight.grad = None
    graphed(source).backward(grad)
    reference = fresh.clone().requires_grad_()
    weight = layer.conv.weight.detach().clone().requires_grad_()
    expected = eca_reference(reference.double(), weight.double())
    expected.backward(grad.double())
    torch.testing.assert_close(source.grad.double(), reference.grad.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.conv.weight.grad.double(), weight.grad.double(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_graphed_network_benchmarks_replay_both_networks(dtype):
    from ecanet.bench.models import benchmark_model_inference, benchmark_model_training

    options = {"dtype": dtype, "graphed": True, "rounds": 2, "warmup": 1, "device": CUDA}
    rows = benchmark_model_inference(("resnet18", "eca_resnet18"), batch=2, image_size=64, **options)
    rows += benchmark_model_training(batch=4, image_size=16, **options)
    assert [row.candidate for row in rows] == ["resnet18", "eca_resnet18"] * 2
    assert [row.mode for row in rows] == ["inference-graphed"] * 2 + ["training-graphed"] * 2
    assert all(row.median_ms > 0 for row in rows)


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_call_benchmark_runs_on_the_gpu(mode):
    from ecanet.bench.layers import benchmark_call

    rows = benchmark_call((2, 64, 7, 7), "channels_last", "float32", mode, rounds=1, warmup=1, device=CUDA)
    assert rows[0].candidate == "pool+rescale" and all(row.median_ms > 0 for row in rows)
