import json
import re

import pytest
import torch

from ecanet.cli.main import build_parser


def test_bench_arguments():
    args = build_parser().parse_args(["bench", "--quick", "--groups", "layer", "tail", "--out", "somewhere"])
    assert args.quick and args.groups == ["layer", "tail"] and args.out == "somewhere"
    assert args.handler.__module__ == "ecanet.cli.bench"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cuda:99"], "ecanet bench: error: benchmark device 'cuda:99' asked for"),
        (["--rounds", "0"], "ecanet bench: error: --rounds must be >= 1, got 0"),
        (["--threads", "0"], "ecanet bench: error: --threads must be >= 1, got 0"),
        (["--only", "trainng"], r"ecanet bench: error: no benchmark case matches \['trainng'\]; cases look like"),
    ],
)
def test_bench_refuses_bad_options_in_one_line_with_status_2(tmp_path, capsys, options, message):
    args = build_parser().parse_args(["bench", "--quick", *options, "--out", str(tmp_path)])
    assert args.handler(args) == 2
    assert re.match(message, capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("on_caller", [False, True])
def test_bench_records_where_backward_runs(tmp_path, capsys, on_caller):
    arguments = ["bench", "--quick", "--groups", "call", "--rounds", "1", "--no-progress", "--out", str(tmp_path)]
    args = build_parser().parse_args(arguments + (["--backward-on-caller"] if on_caller else []))
    assert args.handler(args) == 0
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert environment["autograd_multithreading"] is not on_caller
    assert ("--backward-on-caller" in environment["command"]) is on_caller
    assert torch._C._is_multithreading_enabled()  # the setting ends with the run


def test_bench_runs_only_the_cases_asked_for(tmp_path, capsys):
    arguments = ["bench", "--quick", "--groups", "call", "--rounds", "1", "--no-progress", "--out", str(tmp_path)]
    args = build_parser().parse_args([*arguments, "--only", "training nchw"])
    assert args.handler(args) == 0
    environment = json.loads((tmp_path / "environment.json").read_text())
    assert environment["cases"] and all("training nchw" in label for label in environment["cases"])
    assert environment["command"].endswith("--only 'training nchw'")
