import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_model import SPEC
from torch import nn

from ecanet.training import TrainConfig, TrainResult, train
from ecanet.training.checkpoint import load_checkpoint
from ecanet.training.distributed import DistributedContext, resolve_device
from intra_op_threads import intra_op_threads

# Same global batch (16 = 2 processes x 8) and same data order: a data-parallel run computes what a
# single process computes; only the order of floating-point sums differs (gradient all-reduce,
# loss reduction), so losses and weights agree to a relative 1e-5, and accuracies to 0.2 percentage
# points (those last-bit differences may flip the prediction for an image on a decision boundary).
TOLERANCE = 1e-5
ACCURACY_TOLERANCE = 0.2
RUN = {"model": SPEC, "epochs": 3, "batch_size": 16, "max_steps_per_epoch": 40, "lr": 0.02, "seed": 1}


def _train_on_one_thread(config: TrainConfig) -> TrainResult:
    """``train(config)`` in this process on one thread, as each torchrun worker trains."""
    with intra_op_threads(1):
        return train(config)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_a_single_process(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    run_dir = tmp_path / "ddp"
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in RUN.items()]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ecanet", "train", *flags, f"--run-dir={run_dir}", "--no-progress",
    ]  # fmt: skip
    # First launch: stopped by SIGTERM (as a cluster pre-empts a job) once an epoch is done.
    launcher = subprocess.Popen(command, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text()) and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=300)
    interrupted = load_checkpoint(run_dir / "last.pt")
    assert 1 <= interrupted["epoch"] < RUN["epochs"], stderr.decode()[-3000:]
    assert stderr.decode().count("ecanet train: stopped by SIGTERM") == 1  # rank 0 alone reports
    # Second launch: the same command resumes and finishes.
    finished = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("run directory:") == 1  # rank 0 alone reports

    record = json.loads((run_dir / "distributed.json").read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    assert len(record["parameter_sha256"]) == 2
    assert record["parameter_sha256"][0] == record["parameter_sha256"][1]  # both ranks hold identical weights
    assert sorted(path.name for path in run_dir.iterdir()) == [
        "best.pt", "config.json", "curves.png", "distributed.json", "last.pt", "metrics.csv", "metrics.jsonl",
        "tensorboard",
    ]  # fmt: skip
    # One writer per launch (rank 0 alone): the interrupted launch and the resumed one.
    assert len(list((run_dir / "tensorboard").iterdir())) == 2

    single = _train_on_one_thread(TrainConfig(**RUN, run_dir=str(tmp_path / "single"), progress=False))
    distributed = load_checkpoint(run_dir / "last.pt")
    assert distributed["world_size"] == 2 and len(distributed["history"]) == RUN["epochs"]
    for ddp_row, single_row in zip(distributed["history"], single.history, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            assert ddp_row[key] == pytest.approx(single_row[key], rel=TOLERANCE), key
        for key in ("train_top1", "val_top1", "val_top5"):
            assert ddp_row[key] == pytest.approx(single_row[key], abs=ACCURACY_TOLERANCE), key
    for name, value in single.model.state_dict().items():
        assert torch.allclose(distributed["model"][name], value, rtol=TOLERANCE, atol=1e-7), name


def test_torchrun_errors_name_the_rank_of_other_processes(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ecanet", "train", f"--model={SPEC}", "--lr=-1", f"--run-dir={tmp_path}", "--no-progress",
    ]  # fmt: skip
    launched = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert launched.returncode != 0
    assert launched.stderr.count("ecanet train: error: lr must be > 0, got -1.0") == 1
    assert launched.stderr.count("ecanet train: error (rank 1): lr must be > 0, got -1.0") == 1


def test_single_process_context_is_the_identity() -> None:
    context = DistributedContext.start("cpu")
    values = torch.tensor([1.0, 2.0])
    assert (context.rank, context.world_size, context.is_main, context.distributed) == (0, 1, True, False)
    assert context.all_reduce_sum(values).tolist() == [1.0, 2.0]
    assert context.any(True) and not context.any(False)
    assert context.gather("x") == ["x"]
    digests = context.parameter_digests(nn.Linear(2, 2))
    assert len(digests) == 1 and len(digests[0]) == 64


def test_parameter_digest_sees_a_one_ulp_change() -> None:
    context = DistributedContext.start("cpu")
    layer = nn.Linear(3, 2)
    before = context.parameter_digests(layer)
    with torch.no_grad():
        layer.weight[0, 0] = torch.nextafter(layer.weight[0, 0], torch.tensor(1.0))
    assert context.parameter_digests(layer) != before


def test_parameter_digest_ignores_the_memory_format() -> None:
    context = DistributedContext.start("cpu")
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 3), nn.Linear(4, 2))
    before = context.parameter_digests(model)
    assert context.parameter_digests(model.to(memory_format=torch.channels_last)) == before


@pytest.mark.parametrize(
    ("requested", "message"),
    [("gpu", "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"), ("meta", "got 'meta'")],
)
def test_resolve_device_rejects_unknown_devices(requested: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_device(requested)


def test_one_gpu_index_for_all_torchrun_processes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="device='cuda:0' under torchrun would put every process on one GPU"):
        DistributedContext.start("cuda:0")


def test_resolve_device_defaults_to_what_exists() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


@pytest.mark.slow
def test_torchrun_compiled_data_parallel_step(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    # torch.compile over the DDP wrapper: dynamo splits the graph at gradient buckets so the
    # all-reduce still overlaps the backward. The replicas must end identical, and equal to an
    # eager single process up to the order of float sums (inductor's and the all-reduce's).
    run = {"model": SPEC, "epochs": 1, "batch_size": 16, "max_steps_per_epoch": 3}
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in run.items()]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "ecanet", "train", *flags, "--compile=default", f"--run-dir={tmp_path / 'ddp'}", "--no-progress",
    ]  # fmt: skip
    finished = subprocess.run(command, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "distributed.json").read_text())
    assert record["world_size"] == 2
    assert record["parameter_sha256"][0] == record["parameter_sha256"][1]
    distributed = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert distributed["config"]["compile"] == "default"
    single = _train_on_one_thread(TrainConfig(**run, run_dir=str(tmp_path / "single"), progress=False))
    assert distributed["history"][0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-4)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(distributed["model"][name], value, rtol=1e-4, atol=1e-6)
