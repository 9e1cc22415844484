from ecanet.cli.main import build_parser


def test_bench_arguments():
    args = build_parser().parse_args(["bench", "--quick", "--groups", "layer", "tail", "--out", "somewhere"])
    assert args.quick and args.groups == ["layer", "tail"] and args.out == "somewhere"
    assert args.handler.__module__ == "ecanet.cli.bench"
