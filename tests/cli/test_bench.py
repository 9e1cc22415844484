import pytest

from ecanet.cli.main import build_parser


def test_bench_arguments():
    args = build_parser().parse_args(["bench", "--quick", "--groups", "layer", "tail", "--out", "somewhere"])
    assert args.quick and args.groups == ["layer", "tail"] and args.out == "somewhere"
    assert args.handler.__module__ == "ecanet.cli.bench"


def test_bench_refuses_a_device_that_is_not_there(tmp_path, capsys):
    args = build_parser().parse_args(["bench", "--quick", "--device", "cuda:99", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="ecanet bench: benchmark device 'cuda:99' asked for"):
        args.handler(args)
    assert not any(tmp_path.iterdir())
