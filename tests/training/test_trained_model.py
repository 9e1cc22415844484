import dataclasses

import pytest
import torch

from ecanet.data import DatasetInfo
from ecanet.training import TrainConfig, load_trained_model, train
from ecanet.training.checkpoint import load_checkpoint, save_checkpoint
from intra_op_threads import intra_op_threads

SHORT_RUN = {
    "model": "eca_resnet18",
    "model_kwargs": {"width": 8},
    "epochs": 1,
    "batch_size": 16,
    "max_steps_per_epoch": 3,
    "seed": 1,
    "progress": False,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    with intra_op_threads(1):
        run_dir = tmp_path_factory.mktemp("short-run")
        return train(TrainConfig(**SHORT_RUN, run_dir=str(run_dir))), run_dir


@pytest.mark.slow
def test_the_checkpoint_gives_back_the_trained_network(finished_run):
    result, run_dir = finished_run
    trained = load_trained_model(run_dir / "last.pt")
    assert trained.config == TrainConfig(**SHORT_RUN, run_dir=str(run_dir))
    assert trained.epoch == 1 and trained.info.num_classes == 10 and trained.info.in_chans == 1
    assert not trained.model.training
    x = torch.randn(4, trained.info.in_chans, trained.info.image_size, trained.info.image_size)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), result.model.eval()(x), rtol=0, atol=0)


def test_a_file_that_is_not_a_training_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    save_checkpoint({"model": {}, "epoch": 1}, path)
    with pytest.raises(ValueError, match=r"is not a checkpoint written by ecanet train: it lacks 'config', 'dataset'"):
        load_trained_model(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_trained_model(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"config": "eca_resnet18"}, r"its 'config' is a str, not the dict ecanet train writes"),
        ({"config": {"bogus": 1}}, r"its 'config' is not a valid TrainConfig: unknown TrainConfig fields \['bogus'\]"),
        ({"config": {"epochs": 0}}, r"its 'config' is not a valid TrainConfig: epochs must be"),
        (
            {"dataset": {"name": "toy"}},
            r"its 'dataset' should have the fields \['name', 'num_classes', .*got \['name'\]",
        ),
        ({"dataset": [1, 2]}, r"its 'dataset' should have the fields .*got a list"),
    ],
    ids=["config-string", "config-unknown-field", "config-invalid", "dataset-incomplete", "dataset-list"],
)
def test_a_damaged_configuration_is_refused_by_name(tmp_path, edit, message):
    info = DatasetInfo("toy", 2, 1, 8, (0.5,), (0.25,), ("no", "yes"))
    checkpoint = {"config": TrainConfig().to_dict(), "dataset": dataclasses.asdict(info), "model": {}, "epoch": 1}
    save_checkpoint({**checkpoint, **edit}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=f"^'{tmp_path / 'last.pt'}': {message}"):
        load_trained_model(tmp_path / "last.pt")


@pytest.mark.slow
def test_weights_that_do_not_fit_the_configured_network_are_refused(finished_run, tmp_path):
    _, run_dir = finished_run
    checkpoint = load_checkpoint(run_dir / "last.pt")
    config = TrainConfig.from_dict(checkpoint["config"])
    checkpoint["config"] = dataclasses.replace(config, model_kwargs={"width": 16}).to_dict()
    save_checkpoint(checkpoint, tmp_path / "edited.pt")
    with pytest.raises(
        ValueError, match=r"the weights do not fit 'eca_resnet18': size mismatch for conv1.weight"
    ) as error:
        load_trained_model(tmp_path / "edited.pt")
    assert "\n" not in str(error.value) and str(error.value).endswith("more)")


MODEL_CODE = """
import pathlib
from torch import nn

def build(num_classes, in_chans, marker):
    pathlib.Path(marker).touch()
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 8 * 8, num_classes))
"""


def test_a_network_named_by_a_function_to_import_is_built_only_when_trusted(tmp_path, monkeypatch):
    (tmp_path / "model_code_probe.py").write_text(MODEL_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "the-checkpoint-ran-code"
    config = TrainConfig(model="model_code_probe:build", model_kwargs={"marker": str(marker)})
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    info = DatasetInfo("toy", 2, 1, 8, (0.5,), (0.25,), ("no", "yes"))
    checkpoint = {"config": config.to_dict(), "dataset": dataclasses.asdict(info), "model": network.state_dict()}
    save_checkpoint({**checkpoint, "epoch": 1}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"importing and calling 'model_code_probe:build'.*trust_model_code=True"):
        load_trained_model(tmp_path / "last.pt")
    assert not marker.exists()
    trained = load_trained_model(tmp_path / "last.pt", trust_model_code=True)
    assert marker.exists()
    torch.testing.assert_close(trained.model.state_dict(), network.state_dict(), rtol=0, atol=0)
