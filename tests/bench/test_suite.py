import json

import pytest
import torch

from ecanet.bench import suite
from ecanet.bench.device import convolves_bfloat16_natively
from ecanet.bench.layers import benchmark_layer
from ecanet.bench.models import benchmark_model_inference, benchmark_model_training
from ecanet.bench.suite import bench_cases, run_bench


def test_full_plan_covers_formats_dtypes_modes_and_models():
    labels = [label for label, _ in bench_cases()]
    assert len([label for label in labels if label.startswith("layer ")]) == 4 * 2 * 2 * 2
    assert "layer 32x2048x7x7 training channels_last bfloat16" in labels
    assert len([label for label in labels if label.startswith("call ")]) == 7 * 2 * 2
    assert "call 32x2048x7x7 training nchw float32" in labels
    assert "call 1x2048x7x7 inference channels_last float32" in labels
    assert "model resnet50 inference-compiled nchw float32" in labels
    assert "model resnet50 inference-compiled channels_last float32" not in labels
    assert "model resnet18 training channels_last float32" in labels


def test_bfloat16_networks_only_where_the_cpu_convolves_bfloat16_natively(monkeypatch):
    native = convolves_bfloat16_natively(torch.device("cpu"))
    assert native == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    labels = {label for label, _ in bench_cases()}
    assert ("model resnet50 inference nchw bfloat16" in labels) == native
    assert ("model resnet18 training channels_last bfloat16" in labels) == native
    for answer in (True, False):
        monkeypatch.setattr(suite, "convolves_bfloat16_natively", lambda device, answer=answer: answer)
        labels = {label for label, _ in bench_cases()}
        assert ("model resnet50 inference channels_last bfloat16" in labels) == answer
        assert "model resnet50 inference nchw float32" in labels
        assert "layer 32x256x56x56 inference nchw bfloat16" in labels  # ecanet's kernels, not oneDNN's


def test_quick_plan_is_a_subset():
    quick = {label for label, _ in bench_cases(quick=True)}
    full = {label for label, _ in bench_cases()}
    assert quick < full and not any("bfloat16" in label or "compiled" in label for label in quick)


def test_unknown_group_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark groups"):
        bench_cases(["layers"])


def test_run_writes_all_files_with_the_command(tmp_path):
    case = ("tiny", lambda: benchmark_layer((2, 8, 3, 3), "nchw", "float32", "inference", rounds=1, warmup=0))
    rows = run_bench(tmp_path, [case], command="ecanet bench --quick", progress=False)
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert environment["command"] == "ecanet bench --quick" and environment["cases"] == ["tiny"]
    assert (tmp_path / "results.txt").read_text().count("\n") == len(rows) + 1
    assert (tmp_path / "results.csv").read_text().count("\n") == len(rows) + 1
    assert environment["bfloat16_convolutions_native"] == convolves_bfloat16_natively(torch.device("cpu"))


def test_a_stopped_run_keeps_the_cases_it_finished(tmp_path):
    def stopped() -> list:
        raise KeyboardInterrupt

    finished = ("tiny", lambda: benchmark_layer((2, 8, 3, 3), "nchw", "float32", "inference", rounds=1, warmup=0))
    with pytest.raises(KeyboardInterrupt):
        run_bench(tmp_path, [finished, ("stopped", stopped)], progress=False)
    rows = (tmp_path / "results.csv").read_text().splitlines()[1:]
    assert rows and all(row.startswith("layer,2x8x3x3,") for row in rows)
    assert (tmp_path / "results.txt").read_text().count("\n") == len(rows) + 1
    assert not (tmp_path / "environment.json").exists()


def test_gpu_plan_times_resnet50_at_224px_and_leaves_glibc_alone():
    cases = dict(bench_cases(["model"], device="cuda"))
    training = cases["model resnet50 training channels_last bfloat16"]
    assert training.func is benchmark_model_training  # not wrapped: glibc's thresholds stay as they are
    assert training.keywords["image_size"] == 224 and training.keywords["small_input"] is False
    assert training.keywords["device"] == torch.device("cuda") and training.keywords["dtype"] == "bfloat16"
    inference = cases["model resnet50 inference nchw float32"]
    assert inference.func is benchmark_model_inference and inference.keywords["batch"] == 64
    assert training.keywords["names"] == ("resnet50", "eca_resnet50", "eca_resnet50+training-node")
    graphed = cases["model resnet50 training-graphed channels_last bfloat16"]
    assert graphed.keywords["names"] == ("resnet50", "eca_resnet50")
    compiled = cases["model resnet50 inference-compiled nchw float32"]
    assert compiled.keywords["names"] == ("resnet50", "eca_resnet50", "eca_resnet50+projected-gate")
    cpu_compiled = dict(bench_cases(["model"]))["model resnet50 inference-compiled nchw float32"]
    assert "names" not in cpu_compiled.args[0].keywords  # the operators' CPU kernels say nothing of a GPU
    graphed = cases["model resnet50 inference-graphed channels_last bfloat16"]
    assert graphed.keywords["graphed"] is True and graphed.keywords["batch"] == 64
    assert cases["model resnet50 training-graphed nchw float32"].keywords["graphed"] is True
    assert training.keywords["graphed"] is False
    compiled = cases["model resnet50 training-compiled channels_last bfloat16"]
    assert compiled.func is benchmark_model_training and compiled.keywords["compiled"] is True
    assert "model resnet50 training-compiled nchw float32" in cases
    graph_replayed = cases["model resnet50 training-compiled-reduce-overhead channels_last bfloat16"]
    assert graph_replayed.keywords["compiled"] is True and graph_replayed.keywords["compile_mode"] == "reduce-overhead"
    cpu_cases = dict(bench_cases(["model"]))
    assert "model resnet18 training nchw float32" in cpu_cases
    assert not any("graphed" in label or "training-compiled" in label for label in cpu_cases)
    pinned = cpu_cases["model resnet18 training nchw float32"]
    assert pinned.func is suite._run_with_pinned_allocator  # pinned glibc first
    assert pinned.args[0].keywords["rounds"] == suite.NETWORK_ROUNDS["cpu"] > 15
    assert training.keywords["rounds"] == suite.NETWORK_ROUNDS["cuda"]
    assert (
        dict(bench_cases(["model"], rounds=3))["model resnet18 training nchw float32"].args[0].keywords["rounds"] == 3
    )
