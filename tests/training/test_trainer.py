import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_model import SPEC, build
from torch import nn

from ecanet.training import TrainConfig, TrainingInterrupted, train
from ecanet.training.checkpoint import load_checkpoint
from intra_op_threads import intra_op_threads

TIMING_FIELDS = {"epoch_seconds", "images_per_second"}
# A run long enough to be killed mid-way, short enough for the test suite: 5 epochs of 40 steps.
RESUMABLE = {
    "model": SPEC,
    "epochs": 5,
    "batch_size": 32,
    "max_steps_per_epoch": 40,
    "lr": 0.05,
    "warmup_epochs": 1,
    "seed": 3,
    "deterministic": True,
    "progress": False,
}


@pytest.fixture(autouse=True)
def one_thread():
    """Subprocesses run with one thread; so does this process, so their numbers are comparable."""
    with intra_op_threads(1):
        yield


def numbers(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMING_FIELDS} for row in history]


def assert_same_curve(actual: list[dict], expected: list[dict]) -> None:
    assert [row["epoch"] for row in actual] == [row["epoch"] for row in expected]
    for got, want in zip(numbers(actual), numbers(expected), strict=True):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    with intra_op_threads(1):
        return train(TrainConfig(**RESUMABLE, run_dir=str(tmp_path_factory.mktemp("uninterrupted")))).history


def cli_arguments(config: dict) -> list[str]:
    arguments = ["train"]
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            arguments.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            arguments += [flag, str(value)]
    return arguments


@pytest.mark.slow
def test_short_run_beats_chance_and_writes_its_files(tmp_path: Path) -> None:
    config = TrainConfig(
        model=SPEC, epochs=2, batch_size=64, max_steps_per_epoch=60, optimizer="adamw", lr=3e-3,
        label_smoothing=0.1, grad_clip=5.0, run_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    result = train(config)
    assert [row["epoch"] for row in result.history] == [1, 2]
    # Chance is 10% top-1 and 50% top-5 on ten classes.
    assert result.final_top1 > 45.0
    assert result.history[-1]["val_top5"] > 85.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_top1 == max(row["val_top1"] for row in result.history)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["val_top1"] for line in lines] == [row["val_top1"] for row in result.history]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == config
    with Image.open(tmp_path / "curves.png") as curves:
        assert curves.format == "PNG" and curves.width > curves.height > 200
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "epoch"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2 and checkpoint["config"] == config.to_dict()
    for name, value in result.model.state_dict().items():
        assert torch.equal(checkpoint["model"][name], value)


def test_bf16_channels_last_step_schedule_with_a_worker_process(tmp_path: Path) -> None:
    config = TrainConfig(
        model=SPEC, epochs=2, batch_size=32, max_steps_per_epoch=3, amp="bf16", channels_last=True,
        schedule="step", workers=1, run_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    history = train(config).history
    # Step decay x0.1 at the steps nearest 30/60/90% of 6: steps 2, 4 and 5; epoch 2 starts at step 3, after one.
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.1 * 0.1])
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in history)


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("first", 5), ("second", 5), ("other", 6)):
        config = TrainConfig(
            model=SPEC, epochs=2, batch_size=32, max_steps_per_epoch=8, seed=seed, deterministic=True,
            run_dir=str(tmp_path / name), progress=False,
        )  # fmt: skip
        runs[name] = train(config)
    assert numbers(runs["first"].history) == numbers(runs["second"].history)
    for name, value in runs["first"].model.state_dict().items():
        assert torch.equal(value, runs["second"].model.state_dict()[name])
    assert numbers(runs["first"].history) != numbers(runs["other"].history)


class SignalAtStep(nn.Module):
    """The tiny model, sending this process ``signal_number`` during forward call ``at_call``.

    Training calls are counted, or evaluation calls with ``evaluating=True``.
    """

    def __init__(self, signal_number: int | None = None, at_call: int = 0, evaluating: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)  # a model passed to train() is initialised by the caller
        self.net = build(num_classes=10, in_chans=1)
        self.signal_number, self.at_call, self.calls = signal_number, at_call, 0
        self.evaluating = evaluating

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training != self.evaluating:
            self.calls += 1
            if self.calls == self.at_call and self.signal_number is not None:
                os.kill(os.getpid(), self.signal_number)
        return self.net(x)


@pytest.mark.slow
def test_sigint_mid_epoch_saves_and_resume_continues_exactly(tmp_path: Path) -> None:
    config = TrainConfig(**{**RESUMABLE, "model": "signal-at-step", "epochs": 3}, run_dir=str(tmp_path))
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a process started in the background
    # Call 47 is step 7 of epoch 2 (40 steps per epoch).
    with pytest.raises(TrainingInterrupted, match="SIGINT") as interruption:
        train(config, model=SignalAtStep(signal.SIGINT, at_call=47))
    assert interruption.value.checkpoint == tmp_path / "last.pt"
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 7)
    assert [row["epoch"] for row in checkpoint["history"]] == [1]
    assert signal.getsignal(signal.SIGINT) is handler_before
    resumed = train(config, model=SignalAtStep())
    reference = train(dataclasses.replace(config, run_dir=str(tmp_path / "reference")), model=SignalAtStep())
    assert_same_curve(resumed.history, reference.history)
    for name, value in reference.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], value, rtol=1e-5, atol=1e-7)


def test_sigterm_in_the_last_evaluation_finishes_the_run(tmp_path: Path) -> None:
    config = TrainConfig(**{**RESUMABLE, "epochs": 1, "max_steps_per_epoch": 2}, run_dir=str(tmp_path))
    result = train(config, model=SignalAtStep(signal.SIGTERM, at_call=1, evaluating=True))
    assert [row["epoch"] for row in result.history] == [1]
    assert (tmp_path / "curves.png").is_file()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_fewer_epochs_than_the_checkpoint_holds_are_refused(tmp_path: Path) -> None:
    config = TrainConfig(**{**RESUMABLE, "epochs": 2, "max_steps_per_epoch": 2}, run_dir=str(tmp_path))
    # Call 3 is step 1 of epoch 2: the checkpoint holds one epoch and a part of the second.
    with pytest.raises(TrainingInterrupted):
        train(config, model=SignalAtStep(signal.SIGINT, at_call=3))
    with pytest.raises(ValueError, match="holds 1 finished epochs and 1 steps of epoch 2, more than epochs=1"):
        train(dataclasses.replace(config, epochs=1), model=SignalAtStep())
    train(config, model=SignalAtStep())
    with pytest.raises(ValueError, match="holds 2 finished epochs, more than epochs=1; use epochs >= 2"):
        train(dataclasses.replace(config, epochs=1), model=SignalAtStep())


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_curve(
    tmp_path: Path, subprocess_env: dict[str, str], uninterrupted: list[dict]
) -> None:
    command = [sys.executable, "-m", "ecanet", *cli_arguments({**RESUMABLE, "run_dir": str(tmp_path)})]
    process = subprocess.Popen(command, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    killed_at = load_checkpoint(tmp_path / "last.pt")
    done = killed_at["epoch"]
    assert 1 <= done < RESUMABLE["epochs"], "the kill should land before the run finished"
    assert_same_curve(killed_at["history"], uninterrupted[:done])
    resumed = train(TrainConfig(**RESUMABLE, run_dir=str(tmp_path)))
    # Epochs 1..done come from the checkpoint, the rest continue where the killed run stopped.
    assert_same_curve(resumed.history, uninterrupted)
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_finished_run_returns_without_training_and_can_be_extended(tmp_path: Path, uninterrupted: list[dict]) -> None:
    config = TrainConfig(**{**RESUMABLE, "epochs": 1}, run_dir=str(tmp_path))
    first = train(config)
    stamp = (tmp_path / "last.pt").stat().st_mtime_ns
    again = train(config)
    assert (tmp_path / "last.pt").stat().st_mtime_ns == stamp
    assert numbers(again.history) == numbers(first.history)
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value)
    extended = train(dataclasses.replace(config, epochs=2))
    assert [row["epoch"] for row in extended.history] == [1, 2]
    assert numbers(extended.history)[0] == numbers(first.history)[0]


def test_a_crash_after_last_pt_is_completed_by_the_next_run(tmp_path: Path) -> None:
    config = TrainConfig(**{**RESUMABLE, "epochs": 1, "max_steps_per_epoch": 10}, run_dir=str(tmp_path))
    train(config)
    after_one = {name: (tmp_path / name).read_bytes() for name in ("best.pt", "metrics.jsonl", "metrics.csv")}
    finished = train(dataclasses.replace(config, epochs=2))
    assert finished.history[1]["val_top1"] > finished.history[0]["val_top1"], "epoch 2 should be the best"
    # The files as a crash right after epoch 2's last.pt leaves them: the rest still holds epoch 1.
    for name, content in after_one.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "curves.png").unlink()
    stamp = (tmp_path / "last.pt").stat().st_mtime_ns
    again = train(dataclasses.replace(config, epochs=2))
    assert numbers(again.history) == numbers(finished.history)
    assert (tmp_path / "last.pt").stat().st_mtime_ns == stamp
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 2 and best["best_top1"] == finished.best_top1
    for name, value in finished.model.state_dict().items():
        assert torch.equal(best["model"][name], value)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    assert (tmp_path / "curves.png").is_file()
    completed = {path: path.stat().st_mtime_ns for path in tmp_path.iterdir() if path.is_file()}
    train(dataclasses.replace(config, epochs=2))
    assert {path: path.stat().st_mtime_ns for path in completed} == completed
    (tmp_path / "best.pt").write_bytes(b"torn")  # unreadable: written again, not an error
    train(dataclasses.replace(config, epochs=2))
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2


def test_a_moved_dataset_resumes(tmp_path: Path) -> None:
    dataset = tmp_path / "photos"
    for label, colour in enumerate(((200, 30, 30), (20, 180, 40), (40, 90, 250))):
        (dataset / f"class{label}").mkdir(parents=True)
        for index in range(10):
            Image.new("RGB", (20, 14), (colour[0], colour[1], colour[2] - index)).save(
                dataset / f"class{label}/{index}.png"
            )
    config = TrainConfig(
        model=SPEC, data="imagefolder", data_dir=str(dataset), image_size=16, epochs=1, batch_size=8,
        run_dir=str(tmp_path / "run"), progress=False,
    )  # fmt: skip
    train(config)
    moved = dataset.rename(tmp_path / "moved")
    resumed = train(dataclasses.replace(config, data_dir=str(moved), epochs=2))
    assert [row["epoch"] for row in resumed.history] == [1, 2]


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    config = TrainConfig(
        model=SPEC, epochs=1, batch_size=32, max_steps_per_epoch=1, run_dir=str(tmp_path), progress=False
    )
    train(config)
    with pytest.raises(ValueError, match=r"different configuration \(lr: 0.1 -> 0.5\)"):
        train(dataclasses.replace(config, lr=0.5))
    # The default learning rate, spelled out, is the same configuration.
    assert len(train(dataclasses.replace(config, lr=0.1)).history) == 1
    with pytest.raises(FileNotFoundError, match=r"resume='.*nowhere' does not exist"):
        train(dataclasses.replace(config, run_dir=None, resume=str(tmp_path / "nowhere")))
    resumed = train(dataclasses.replace(config, run_dir=str(tmp_path / "copy"), resume=str(tmp_path / "last.pt")))
    assert resumed.run_dir == tmp_path / "copy" and len(resumed.history) == 1


def test_an_unreadable_last_checkpoint_is_named_kept_and_best_pt_suggested(tmp_path: Path) -> None:
    config = TrainConfig(
        model=SPEC, epochs=1, batch_size=32, max_steps_per_epoch=1, run_dir=str(tmp_path), progress=False
    )
    train(config)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk before atomic writes
    truncated = last.read_bytes()
    with pytest.raises(ValueError, match=r"cannot read the checkpoint .*last\.pt.*; resume from resume='.*best\.pt'"):
        train(dataclasses.replace(config, epochs=2))
    assert last.read_bytes() == truncated
    resumed = train(dataclasses.replace(config, run_dir=str(tmp_path / "again"), resume=str(tmp_path / "best.pt")))
    assert len(resumed.history) == 1


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"amp": "fp16"}, ValueError, "amp='fp16' needs a CUDA device"),
        ({"sync_bn": True}, ValueError, "sync_bn=True needs CUDA"),
        ({"device": "cuda"}, ValueError, "device='cuda' but CUDA is not available"),
        ({"device": "tpu"}, ValueError, "device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ({"batch_size": 20000}, ValueError, "batch_size=20000 exceeds the 12000 training images"),
        ({"model": "no_such_module:build"}, ValueError, "cannot import 'build' from 'no_such_module'"),
        ({"model": "tiny_model:missing"}, ValueError, "cannot import 'missing' from 'tiny_model'"),
        ({"model": "eca_resnet17"}, ValueError, "unknown model name 'eca_resnet17'"),
        ({"data": "mnist"}, ValueError, r"name must be one of \[.*'fashion-mnist'.*\], got 'mnist'"),
        ({"data": "cifar10", "data_dir": "no/such/dir"}, FileNotFoundError, "cifar10 not found"),
        ({"data": "fashion-mnist", "data_dir": "x"}, ValueError, "data_dir='x' is not used by 'fashion-mnist'"),
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, changes: dict, error: type, message: str) -> None:
    config = TrainConfig(
        model=SPEC, epochs=1, batch_size=32, max_steps_per_epoch=1, run_dir=str(tmp_path), progress=False
    )
    with pytest.raises(error, match=message):
        train(dataclasses.replace(config, **changes))
    assert not (tmp_path / "last.pt").exists()


def test_backward_runs_on_the_training_thread(tmp_path: Path) -> None:
    import tiny_model

    tiny_model.BACKWARD_THREADING.clear()
    config = TrainConfig(
        model="tiny_model:build_recording", epochs=1, batch_size=16, max_steps_per_epoch=2,
        run_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    train(config)
    assert tiny_model.BACKWARD_THREADING == [False, False]
    assert torch._C._is_multithreading_enabled()  # the setting is the trainer's alone


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_an_eager_checkpoint(tmp_path: Path) -> None:
    base = {"model": SPEC, "epochs": 1, "batch_size": 16, "max_steps_per_epoch": 3, "seed": 1, "progress": False}
    eager = train(TrainConfig(**base, run_dir=str(tmp_path / "eager")))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(TrainConfig(**base, compile="default", run_dir=str(tmp_path / "compiled")))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the step really went through the compiler
    # Inductor sums in another order: the numbers agree to rounding, not bit for bit.
    for key in ("train_loss", "val_loss"):
        assert compiled.history[0][key] == pytest.approx(eager.history[0][key], rel=1e-4)
    checkpoint = load_checkpoint(tmp_path / "compiled" / "last.pt")
    assert set(checkpoint["model"]) == set(eager.model.state_dict())  # no "_orig_mod." prefixes
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(checkpoint["model"][name], value, rtol=1e-4, atol=1e-5)
    # The compile mode may change on resumption: the eager run continues the compiled one.
    extended = train(TrainConfig(**{**base, "epochs": 2}, run_dir=str(tmp_path / "compiled")))
    assert [row["epoch"] for row in extended.history] == [1, 2]
