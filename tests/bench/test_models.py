import math

import pytest
import torch

from ecanet.bench import models
from ecanet.bench.models import PROJECTED_GATE, TRAINING_NODE, benchmark_model_inference, benchmark_model_training
from ecanet.ops import triton_training


def test_inference_rows_compare_against_the_first_model():
    rows = benchmark_model_inference(
        ("resnet18", "eca_resnet18"), batch=1, image_size=32, memory_format="channels_last", rounds=2, warmup=0
    )
    assert [r.candidate for r in rows] == ["resnet18", "eca_resnet18"]
    assert rows[0].overhead_pct == 0.0 and math.isnan(rows[1].floor_ms)
    assert rows[1].case == "eca_resnet18 b1 32px" and rows[1].memory_format == "channels_last"


def test_training_step_rows_in_bfloat16_autocast():
    rows = benchmark_model_training(batch=2, image_size=8, dtype="bfloat16", rounds=1, warmup=0)
    assert [(r.candidate, r.mode, r.dtype) for r in rows] == [
        ("resnet18", "training", "bfloat16"),
        ("eca_resnet18", "training", "bfloat16"),
    ]


@pytest.mark.parametrize("options", [{"device": "cpu"}, {"device": "cpu", "compiled": True}])
def test_graphed_inference_needs_a_cuda_device_and_no_compile(options):
    with pytest.raises(ValueError, match="needs a CUDA device and no compile, got cpu"):
        benchmark_model_inference(("resnet18", "eca_resnet18"), batch=1, image_size=32, graphed=True, **options)


@pytest.mark.parametrize("options", [{}, {"compiled": True}])
def test_graphed_training_needs_a_cuda_device_and_no_compile(options):
    with pytest.raises(ValueError, match="needs a CUDA device and no compile, got cpu"):
        benchmark_model_training(batch=2, image_size=8, graphed=True, **options)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("compile_mode", "mode"),
    [("default", "training-compiled"), ("reduce-overhead", "training-compiled-reduce-overhead")],
)
def test_compiled_training_steps_time_both_networks(compile_mode, mode):
    # On a CPU reduce-overhead compiles without CUDA graphs: the case runs, and is named for its mode.
    rows = benchmark_model_training(batch=2, image_size=8, compiled=True, compile_mode=compile_mode, rounds=1, warmup=1)
    assert [(r.candidate, r.mode) for r in rows] == [("resnet18", mode), ("eca_resnet18", mode)]
    assert all(r.median_ms > 0 for r in rows)


def test_projected_gate_candidates_switch_ecas_bottlenecks():
    model = models._seeded_model("eca_resnet50" + PROJECTED_GATE, num_classes=10)
    assert sum(getattr(block, "projected_gate", False) for block in model.modules()) == 16
    plain = models._seeded_model("eca_resnet50", num_classes=10)
    assert not any(getattr(block, "projected_gate", False) for block in plain.modules())
    with pytest.raises(ValueError, match="resnet18 has no ECA bottleneck"):
        models._seeded_model("resnet18" + PROJECTED_GATE)


def test_training_node_candidates_step_with_the_node_in_use(monkeypatch):
    # What each step's loss sees: the node switched on for the third candidate's steps only.
    seen = []
    cross_entropy = torch.nn.functional.cross_entropy

    def watched(*args, **kwargs):
        seen.append(triton_training.in_use)
        return cross_entropy(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", watched)
    names = ("resnet18", "eca_resnet18", "eca_resnet18" + TRAINING_NODE)
    rows = benchmark_model_training(names, batch=2, image_size=8, rounds=3, warmup=0)
    assert [row.candidate for row in rows] == list(names)
    assert seen.count(True) * 2 == seen.count(False) > 0
    assert not triton_training.in_use
