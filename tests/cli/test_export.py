import json

import onnx
import onnxruntime
import pytest
import torch

from ecanet.cli.main import main
from ecanet.data import load_dataset
from ecanet.training import TrainConfig, load_trained_model
from ecanet.training.checkpoint import save_checkpoint
from short_runs import train_short_run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return train_short_run(tmp_path_factory.mktemp("short-run"))


@pytest.mark.slow
def test_the_onnx_file_classifies_test_images_as_the_trained_network_does(checkpoint, tmp_path, capsys):
    output = tmp_path / "classifier.onnx"
    assert main(["export", str(checkpoint), "--output", str(output)]) == 0
    message = capsys.readouterr().out
    assert message.startswith(f"wrote {output} (onnx, ") and "eca_resnet18 after 1 epochs" in message
    assert "run at batch 2 and 3" in message

    test_set, info = load_dataset("fashion-mnist", train=False, augment=False)
    images = torch.stack([test_set[i][0] for i in range(64)])
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with torch.no_grad():
        expected = load_trained_model(checkpoint).model(images)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(logits.argmax(1), expected.argmax(1))

    properties = {prop.key: prop.value for prop in onnx.load(str(output)).metadata_props}
    assert json.loads(properties["classes"]) == list(info.classes)
    assert json.loads(properties["mean"]) == pytest.approx(list(info.mean))
    assert properties["model"] == "eca_resnet18" and properties["dataset"] == "fashion-mnist"


@pytest.mark.slow
def test_a_static_batch_program(checkpoint, tmp_path, capsys):
    output = tmp_path / "classifier.pt2"
    assert main(["export", str(checkpoint), "--output", str(output), "--static-batch", "8"]) == 0
    assert "(pt2, " in capsys.readouterr().out
    program = torch.export.load(str(output))
    assert program.module()(torch.randn(8, 1, 28, 28)).shape == (8, 10)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.pt", "--output", "model.onnx"], "checkpoint not found"),
        (["{weights}", "--output", "model.onnx"], "is not a checkpoint written by ecanet train"),
        (["{weights}", "--output", "model.onnx", "--static-batch", "0"], "--static-batch must be positive, got 0"),
        (["{code}", "--output", "model.onnx"], "'subprocess:getoutput', which would run code"),
    ],
)
def test_errors_exit_with_2_and_write_nothing(tmp_path, capsys, arguments, message):
    weights = tmp_path / "weights.pt"
    save_checkpoint({"model": {}}, weights)
    code = tmp_path / "code.pt"
    config = TrainConfig(model="subprocess:getoutput", model_kwargs={"cmd": f"touch {tmp_path / 'ran'}"})
    save_checkpoint({"config": config.to_dict(), "dataset": {}, "model": {}, "epoch": 1}, code)
    arguments = [argument.format(weights=weights, code=code) for argument in arguments]
    arguments[arguments.index("--output") + 1] = str(tmp_path / "model.onnx")
    assert main(["export", *arguments]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("ecanet export: error: ") and message in printed
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "ran").exists()


@pytest.mark.slow
def test_an_output_name_without_a_format_exits_with_2(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "model.onnnx")]) == 2
    assert "cannot tell the format from 'model.onnnx'" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "x.pt2"), "--format", "onnx"]) == 2
    assert "'x.pt2' names a pt2 file, not onnx: rename it *.onnx" in capsys.readouterr().err
    assert not (tmp_path / "x.pt2").exists()


@pytest.mark.slow
def test_an_output_path_that_is_a_directory_exits_with_2_and_names_it(checkpoint, tmp_path, capsys):
    (tmp_path / "model.onnx").mkdir()
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "model.onnx")]) == 2
    assert f"'{tmp_path / 'model.onnx'}' is a directory" in capsys.readouterr().err
