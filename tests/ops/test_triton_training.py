"""What :mod:`ecanet.ops.triton_training` decides without a GPU: which compiled kernels a C++
launch takes, how a launch is described, and when prepared training calls take the node.

The node's launches themselves are checked by ``training_node_checks.py`` (in Triton's
interpreter here, through the CUDA driver by ``make gpu-check``).
"""

from types import SimpleNamespace

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is an optional accelerator dependency")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ecanet.bench.host import CompiledStandIn, cuda_route_without_launches, cuda_signature  # noqa: E402
from ecanet.functional import eca_residual  # noqa: E402
from ecanet.ops import cpu_kernels, triton_kernels, triton_training  # noqa: E402

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="needs the compiled extension")


def _pooling_launch():
    """The bound pooling launch of a training call on 2x8x4x4 float32, and its arguments."""
    x = torch.zeros(2, 8, 4, 4)
    shape = triton_kernels.geometry(x, 1)
    plans = triton_kernels.training_plans(shape, x.device, x.dtype, (1, 1, 3), False, "zeros", "sigmoid", False)
    launch = plans.bound().forward.pool.launch
    return launch, (x,) * 5 + (torch.zeros(2, 8),) + launch.plan.scalars


def test_a_kernel_compiled_for_a_gpu_is_launched_from_cpp(tmp_path, monkeypatch):
    # Triton compiles the pooling kernel for Hopper here, with the signature its launch would
    # have there; the C++ launch reads what it needs from the real compiled kernel's metadata.
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    launch, args = _pooling_launch()
    plan = launch.plan
    signature = cuda_signature(plan.launcher.kernel, args, plan.constexprs)
    values = dict(zip(signature, (*args, *plan.constexprs.values()), strict=True))
    constants = {name: values[name] for name, kind in signature.items() if kind == "constexpr"}
    source = ASTSource(fn=plan.launcher.kernel, signature=signature, constexprs=constants)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert compiled.src.signature == signature
    stand_in = SimpleNamespace(function=1, metadata=compiled.metadata, src=compiled.src)
    kernel_launch = triton_training.kernel_launch(stand_in, launch)
    assert kernel_launch is not None and kernel_launch.tensors == 6


@pytest.mark.parametrize(
    "setting",
    [
        {"global_scratch_size": 256},
        {"profile_scratch_size": 64},
        {"num_ctas": 2},
        {"launch_pdl": True},
        {"launch_cooperative_grid": True},
        {"instrumentation_mode": "gsan"},
    ],
)
def test_kernels_needing_more_than_a_plain_launch_are_left_to_triton(setting):
    launch, args = _pooling_launch()
    stand_in = CompiledStandIn(cuda_signature(launch.plan.launcher.kernel, args, launch.plan.constexprs))
    assert triton_training.kernel_launch(stand_in, launch) is not None
    stand_in.metadata = SimpleNamespace(**{**vars(CompiledStandIn.metadata), **setting})
    assert triton_training.kernel_launch(stand_in, launch) is None


def test_a_parameter_type_cpp_cannot_pass_is_left_to_triton():
    launch, args = _pooling_launch()
    signature = cuda_signature(launch.plan.launcher.kernel, args, launch.plan.constexprs)
    assert triton_training.kernel_launch(CompiledStandIn(signature), launch) is not None
    assert triton_training.kernel_launch(CompiledStandIn({**signature, "C": "u64"}), launch) is None
    assert triton_training.kernel_launch(CompiledStandIn({**signature, "x_ptr": "i32"}), launch) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((4, 128, 0, ["i32", "pointer"], [1.0]), "tensors come before"),
        ((4, 128, 0, ["pointer", "i32"], []), "a value for every parameter"),
        ((4, 128, 0, ["pointer"], [1.0]), "more values than parameters"),
        ((4, 128, 0, ["pointer", "u8"], [1.0]), "parameter of type u8"),
        ((4, 2048, 0, ["pointer"], []), "1 to 1024 threads"),
        ((-1, 128, 0, ["pointer"], []), "grid under 2\\^31"),
    ],
)
def test_a_kernel_launch_names_what_is_wrong_with_it(arguments, message):
    with pytest.raises(RuntimeError, match=message):
        cpu_kernels.entry("KernelLaunch")(1, *arguments)


def test_launches_go_through_a_named_route():
    launch_through = cpu_kernels.entry("launch_through")
    with pytest.raises(RuntimeError, match="'driver', 'python' or 'nowhere', not 'gpu'"):
        launch_through("gpu")
    with pytest.raises(RuntimeError, match="needs a callable"):
        launch_through("python", 3)
    launch_through("driver")


def _backward_node_names(calls: int) -> list[str]:
    """The autograd node each of ``calls`` repeated training calls of one block tail records, on a
    GPU's route with the launches dropped."""
    x = torch.randn(2, 16, 3, 3, requires_grad=True)
    weight, identity = torch.randn(1, 1, 3, requires_grad=True), torch.randn(2, 16, 3, 3)
    names = []
    with cuda_route_without_launches():
        for _ in range(calls):
            out = eca_residual(x * 1.0, weight, identity, inplace=True)
            names.append(out.grad_fn.name())
            out.sum().backward()
    return names


@pytest.mark.parametrize("in_use", [False, True])
def test_prepared_training_calls_take_the_node_once_their_kernels_are_compiled(monkeypatch, in_use):
    # On a GPU's route (launches dropped): the first call is checked, the second runs the
    # Python Function with the launches it prepared (compiling them: stand-ins here), and from
    # the third on, with the node in use, calls record the C++ node.
    monkeypatch.setattr(triton_training, "in_use", in_use)
    names = _backward_node_names(4)
    python, node = "_FusedEcaBackward", "torch::autograd::CppNode<ecanet::(anonymous namespace)::FusedTraining<"
    assert names[:2] == [python, python]
    for name in names[2:]:
        assert name.startswith(node) == in_use and (name == python) != in_use


@pytest.mark.parametrize("launchable", [True, False])
def test_a_prepared_call_builds_its_node_once(monkeypatch, launchable):
    # Built at the first call whose kernels are all compiled, and never again: where a kernel
    # cannot be launched from C++, the refusal is kept and the calls stay on the Python path.
    monkeypatch.setattr(triton_training, "in_use", True)
    builds = []
    build = triton_training.training_node

    def counted(*args):
        builds.append(triton_training.compiled(args[0]))
        return build(*args) if launchable else None

    monkeypatch.setattr(triton_training, "training_node", counted)
    names = _backward_node_names(5)
    assert builds == [True]
    assert [name == "_FusedEcaBackward" for name in names] == [True, True] + [not launchable] * 3
