import json

import pytest

from ecanet.training import TrainConfig


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"optimizer": "adam"}, ValueError, r"optimizer must be one of \['sgd', 'adamw'\], got 'adam'"),
        ({"schedule": "linear"}, ValueError, r"schedule must be one of \['step', 'cosine'\], got 'linear'"),
        ({"amp": "fp8"}, ValueError, r"amp must be one of \[None, 'bf16', 'fp16'\], got 'fp8'"),
        ({"compile": "fast"}, ValueError, r"compile must be one of \[None, 'default', 'reduce-overhead', .*got 'fast'"),
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
        ({"epochs": 2.5}, TypeError, "epochs must be an integer, got 2.5"),
        ({"batch_size": True}, TypeError, "batch_size must be an integer, got True"),
        ({"max_steps_per_epoch": 0}, ValueError, "max_steps_per_epoch must be >= 1, got 0"),
        ({"image_size": -3}, ValueError, "image_size must be >= 1, got -3"),
        ({"workers": -1}, ValueError, "workers must be >= 0, got -1"),
        ({"seed": -1}, ValueError, "seed must be >= 0, got -1"),
        ({"lr": 0.0}, ValueError, "lr must be > 0, got 0.0"),
        ({"lr": "fast"}, TypeError, "lr must be a number, got 'fast'"),
        ({"lr": float("nan")}, ValueError, "lr must be a finite number, got nan"),
        ({"lr": float("inf")}, ValueError, "lr must be a finite number, got inf"),
        ({"momentum": float("nan")}, ValueError, "momentum must be a finite number, got nan"),
        ({"weight_decay": float("nan")}, ValueError, "weight_decay must be a finite number, got nan"),
        ({"grad_clip": float("nan")}, ValueError, "grad_clip must be a finite number, got nan"),
        ({"warmup_epochs": float("nan")}, ValueError, "warmup_epochs must be a finite number, got nan"),
        ({"label_smoothing": float("nan")}, ValueError, "label_smoothing must be a finite number, got nan"),
        ({"momentum": -0.9}, ValueError, "momentum must be >= 0, got -0.9"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0, got -0.0001"),
        ({"grad_clip": 0}, ValueError, "grad_clip must be > 0, got 0"),
        ({"label_smoothing": 1.0}, ValueError, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ({"warmup_epochs": 11}, ValueError, "warmup_epochs must not exceed epochs=10, got 11"),
        ({"model_kwargs": "width=16"}, TypeError, "model_kwargs must be a dict, got str"),
        ({"model": ""}, TypeError, "model must be a non-empty string, got ''"),
    ],
)
def test_invalid_fields_are_named(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        TrainConfig(**changes).validate()


def test_dict_round_trip_is_plain_json() -> None:
    config = TrainConfig(model_kwargs={"width": 16}, lr=0.2, amp="bf16", max_steps_per_epoch=5)
    text = json.dumps(config.to_dict())
    assert TrainConfig.from_dict(json.loads(text)) == config


def test_from_dict_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("optimizer", "lr", "expected"), [("sgd", None, 0.1), ("adamw", None, 1e-3), ("sgd", 0.3, 0.3)]
)
def test_learning_rate_defaults_follow_the_optimizer(optimizer: str, lr: float | None, expected: float) -> None:
    assert TrainConfig(optimizer=optimizer, lr=lr).learning_rate == expected


def test_run_dir_defaults(tmp_path) -> None:
    assert (
        TrainConfig(model="pkg.mod:build", seed=4).resolved_run_dir().as_posix()
        == "runs/pkg.mod-build_fashion-mnist_seed4"
    )
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"")
    assert TrainConfig(resume=str(checkpoint)).resolved_run_dir() == tmp_path
    assert TrainConfig(resume=str(tmp_path)).resolved_run_dir() == tmp_path
    assert TrainConfig(resume=str(checkpoint), run_dir="elsewhere").resolved_run_dir().as_posix() == "elsewhere"
