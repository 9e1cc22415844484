import pytest

from ecanet.cli.compare import config_from_args
from ecanet.cli.main import build_parser, main
from ecanet.experiments import compare_preset


def test_flags_override_the_preset_and_are_recorded():
    flags = ["--compile", "reduce-overhead", "--amp", "bf16", "--epochs", "3", "--max-steps-per-epoch", "0"]
    flags += ["--width", "8", "--attention", "none, eca", "--seeds", "2"]
    config = config_from_args(build_parser().parse_args(["compare", *flags]))
    training = config.training
    assert (training.compile, training.amp, training.epochs) == ("reduce-overhead", "bf16", 3)
    assert training.max_steps_per_epoch is None and training.model_kwargs["width"] == 8
    assert config.attentions == ("none", "eca") and config.seeds == 2
    assert "--compile reduce-overhead" in config.command


def test_no_flags_keep_the_preset():
    preset = compare_preset("demo")
    config = config_from_args(build_parser().parse_args(["compare"]))
    assert config.training == preset.training and config.attentions == preset.attentions


def test_an_unknown_compile_mode_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--compile", "fast"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


TINY = ["--epochs", "1", "--batch-size", "32", "--max-steps-per-epoch", "2", "--width", "4", "--image-size", "16"]
TINY += [
    "--attention",
    "none,eca",
    "--seeds",
    "1",
    "--latency-batch-size",
    "4",
    "--latency-rounds",
    "3",
    "--no-progress",
]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--attention", "none,foo"], "attention must be one of"),
        (["--seeds", "0"], "seeds must be a positive int, got 0"),
        (["--confidence", "1.5"], "confidence must be a float strictly between 0 and 1, got 1.5"),
        (["--latency-rounds", "0"], "latency_rounds must be a positive int, got 0"),
        (["--lr", "nan"], "lr must be a finite number, got nan"),
        (["--data", "imagefolder"], "data_dir is required for 'imagefolder'"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(arguments, message, tmp_path, capsys):
    assert main(["compare", *TINY, "--run-dir", str(tmp_path / "compare"), *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ecanet compare: error: ") and message in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "compare").exists()


@pytest.mark.slow
def test_other_settings_in_a_used_run_dir_exit_2(tmp_path, capsys):
    run_dir = ["--run-dir", str(tmp_path / "compare")]
    assert main(["compare", *TINY, *run_dir]) == 0
    capsys.readouterr()
    assert main(["compare", *TINY, *run_dir, "--lr", "0.5"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ecanet compare: error: run_dir ") and "'lr': (0.1, 0.5)" in error
