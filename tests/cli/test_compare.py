import pytest

from ecanet.cli.compare import config_from_args
from ecanet.cli.main import build_parser
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
