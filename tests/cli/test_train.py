import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecanet.cli.main import build_parser, main
from ecanet.cli.train import config_from_args
from ecanet.training import TrainConfig
from ecanet.training.checkpoint import load_checkpoint

# The tiny BatchNorm-free test network of tests/training, importable as tiny_model:build.
TINY_MODEL_DIR = Path(__file__).resolve().parents[1] / "training"
TINY = ["--model", "tiny_model:build", "--batch-size", "32", "--no-progress"]


@pytest.fixture(autouse=True)
def tiny_model_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TINY_MODEL_DIR))


def train_flags(parser) -> dict[str, str]:
    subparsers = next(action for action in parser._actions if action.dest == "command")
    train_parser = subparsers.choices["train"]
    return {action.dest: action.option_strings[0] for action in train_parser._actions if action.dest != "help"}


def test_one_flag_per_config_field() -> None:
    flags = train_flags(build_parser())
    fields = [field.name for field in dataclasses.fields(TrainConfig)]
    assert sorted(flags) == sorted(fields)
    assert all(flags[name] == "--" + name.replace("_", "-") for name in fields)


def test_flags_become_the_config_and_omitted_flags_keep_its_defaults() -> None:
    arguments = [
        "train", "--model", "se_resnet18", "--model-kwargs", '{"width": 16}', "--epochs", "3", "--lr", "0.2",
        "--amp", "bf16", "--channels-last", "--grad-clip", "1.5", "--no-progress", "--data-dir", "somewhere",
    ]  # fmt: skip
    config = config_from_args(build_parser().parse_args(arguments))
    expected = TrainConfig(
        model="se_resnet18", model_kwargs={"width": 16}, epochs=3, lr=0.2, amp="bf16", channels_last=True,
        grad_clip=1.5, progress=False, data_dir="somewhere",
    )  # fmt: skip
    assert config == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'"),
        (["--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
        (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["--model-kwargs", "{width: 16}"], "argument --model-kwargs: not valid JSON"),
        (["--model-kwargs", "[16]"], "argument --model-kwargs: must be a JSON object"),
    ],
)
def test_malformed_flags_are_usage_errors(arguments: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
        (["--lr", "-1"], "lr must be > 0, got -1.0"),
        (["--data", "cifar100", "--data-dir", "no/such/dir"], "cifar100 not found: no 'train' in 'no/such/dir'"),
        (["--data", "imagefolder"], "data_dir is required for 'imagefolder'"),
        (["--data", "fashion-mnist-full", "--data-dir", "no/such/dir"], "looked for train-images-idx3-ubyte[.gz]"),
        (["--amp", "fp16", "--device", "cpu"], "amp='fp16' needs a CUDA device"),
        (["--resume", "no/such/run"], "resume='no/such/run' does not exist"),
    ],
)
def test_bad_values_and_paths_exit_2_with_the_reason(arguments: list[str], message: str, tmp_path, capsys) -> None:
    assert main(["train", *TINY, "--run-dir", str(tmp_path / "run"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ecanet train: error: ") and message in error
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_short_run_reports_where_its_results_are(tmp_path, capsys) -> None:
    arguments = ["train", *TINY, "--epochs", "1", "--max-steps-per-epoch", "2", "--run-dir", str(tmp_path)]
    assert main(arguments) == 0
    assert "1 epochs; final top-1 " in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path) -> None:
    arguments = [*TINY, "--epochs", "20", "--max-steps-per-epoch", "100", "--run-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TINY_MODEL_DIR)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ecanet", "train", *arguments], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "last.pt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
    assert "stopped by SIGTERM; checkpoint saved to" in stderr.decode()
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert (checkpoint["epoch"], checkpoint["step"]) > (0, 0) and checkpoint["epoch"] < 20
