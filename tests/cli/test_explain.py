import json

import pytest
import torch

from ecanet.cli.main import main
from ecanet.data import load_dataset
from ecanet.training import TrainConfig, load_trained_model
from ecanet.training.checkpoint import save_checkpoint
from short_runs import train_short_run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_short_run(tmp_path_factory.mktemp("eca-run"), "eca_resnet18")


@pytest.mark.slow
def test_explains_the_whole_test_split(checkpoint, tmp_path, capsys):
    assert main(["explain", str(checkpoint), "--no-freeze", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("eca_resnet18 after 1 epochs on 2000 images: top-1 ")
    assert sum(line.startswith("| layer") and ".eca | ECA |" in line for line in printed.splitlines()) == 8
    values = json.loads((tmp_path / "attention.json").read_text())
    test_set, info = load_dataset("fashion-mnist", train=False, augment=False)
    assert values["classes"] == list(info.classes) and values["images"] == len(test_set)
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    with torch.no_grad():
        predictions = load_trained_model(checkpoint).model(images).argmax(1)
    assert values["accuracy"] == pytest.approx(100.0 * float((predictions == labels).double().mean()))
    assert all(layer["frozen_top1_change"] is None for layer in values["layers"])
    for name in ("attention.csv", "attention.png", "gates-by-class.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_a_random_subset_with_frozen_gates_written_beside_the_checkpoint(checkpoint, capsys):
    assert main(["explain", str(checkpoint), "--limit", "48", "--batch-size", "20", "--no-progress"]) == 0
    out = checkpoint.parent / "explain"
    values = json.loads((out / "attention.json").read_text())
    assert values["images"] == 48
    changes = [layer["frozen_top1_change"] for layer in values["layers"]] + [values["all_frozen_top1_change"]]
    assert all(change["count"] == 48 and change["low"] <= change["mean"] <= change["high"] for change in changes)
    assert "| all frozen |" in capsys.readouterr().out


@pytest.mark.slow
def test_named_layers_only(checkpoint, tmp_path, capsys):
    arguments = ["--layers", "layer1.0.eca, layer4.1.eca,", "--no-freeze", "--limit", "30", "--out", str(tmp_path)]
    assert main(["explain", str(checkpoint), *arguments, "--no-progress"]) == 0
    values = json.loads((tmp_path / "attention.json").read_text())
    assert [layer["name"] for layer in values["layers"]] == ["layer1.0.eca", "layer4.1.eca"]
    assert main(["explain", str(checkpoint), "--layers", "layer9.eca", "--no-progress"]) == 2
    assert "has no module named 'layer9.eca'" in capsys.readouterr().err
    assert main(["explain", str(checkpoint), "--layers", "layer1.0.eca,layer1.0.eca", "--no-progress"]) == 2
    assert "layers names 'layer1.0.eca' more than once" in capsys.readouterr().err


@pytest.mark.slow
def test_a_network_without_attention_is_refused(tmp_path, capsys):
    plain = train_short_run(tmp_path / "plain-run", "resnet18")
    assert main(["explain", str(plain), "--no-progress"]) == 2
    assert "has no channel attention layer to explain" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.pt"], "missing.pt"),
        (["missing.pt", "--limit", "0"], "--limit must be positive, got 0"),
        (["missing.pt", "--batch-size", "-3"], "--batch-size must be positive, got -3"),
    ],
)
def test_bad_arguments_exit_with_2_and_say_why(arguments, message, capsys):
    assert main(["explain", *arguments]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("ecanet explain: error: ") and message in printed


def test_a_checkpoint_naming_code_to_run_is_refused(tmp_path, capsys):
    config = TrainConfig(model="subprocess:getoutput", model_kwargs={"cmd": f"touch {tmp_path / 'ran'}"})
    save_checkpoint({"config": config.to_dict(), "dataset": {}, "model": {}, "epoch": 1}, tmp_path / "last.pt")
    assert main(["explain", str(tmp_path / "last.pt"), "--no-progress"]) == 2
    assert "--trust-model-code" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()


def test_an_output_directory_that_is_a_file_exits_with_2_before_the_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("kept")
    assert main(["explain", "missing.pt", "--out", str(tmp_path / "notes.txt"), "--no-progress"]) == 2
    assert f"the output directory '{tmp_path / 'notes.txt'}' is a file" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "kept"
