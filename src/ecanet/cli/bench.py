"""``ecanet bench``: layer and model benchmarks of ECA against timm, the blog version, SE and no attention."""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from ecanet.bench.device import bench_device
from ecanet.bench.report import format_table
from ecanet.bench.suite import DEFAULT_GROUPS, GROUPS, Case, bench_cases, run_bench, select_cases


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time ECA implementations and ECA networks side by side (CSV, PNG, table)",
        description=(
            "Times ecanet's ECA against timm's EcaModule, the common blog implementation, SE and no "
            "attention on ResNet-50's stage shapes (layer alone and residual-block tail), and "
            "ECA-ResNet-50/18 against ResNet-50/18. Candidates run in alternating order; medians are reported."
        ),
    )
    parser.add_argument("--out", default="bench-results", help="directory for results.csv/.png/.txt")
    parser.add_argument("--quick", action="store_true", help="short run: 2 shapes, float32, 5 rounds")
    parser.add_argument(
        "--rounds", type=int, default=None, help="measured rounds per case (default 15, networks 31 on CPU; quick 5)"
    )
    parser.add_argument(
        "--groups",
        nargs="+",
        choices=GROUPS,
        default=list(DEFAULT_GROUPS),
        help="which benchmark groups to run (default: all but host, the GPU route's host time simulated on CPU)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="run only the cases whose label contains one of these (labels as in the progress bar, "
        "e.g. 'training-graphed' or 'model resnet18 training channels_last')",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's); 1 avoids waiting on descheduled threads on shared cores",
    )
    parser.add_argument(
        "--device", default="cpu", help="where to run: cpu (default), cuda or cuda:N (GPU kernels through Triton)"
    )
    parser.add_argument(
        "--backward-on-caller",
        action="store_true",
        help="run backward passes on the calling thread, as `ecanet train` does "
        "(default: PyTorch's worker thread per GPU; no difference on a CPU)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        device, cases = _selection(args)
    except ValueError as error:  # a bad option: one line and exit status 2, as the other subcommands
        print(f"ecanet bench: error: {error}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = ["ecanet", "bench", "--out", args.out, "--groups", *args.groups]
    command += [] if args.threads is None else ["--threads", str(args.threads)]
    command += ["--quick"] if args.quick else []
    command += [] if args.rounds is None else ["--rounds", str(args.rounds)]
    command += [] if device.type == "cpu" else ["--device", args.device]
    command += ["--backward-on-caller"] if args.backward_on_caller else []
    command += ["--only", *args.only] if args.only else []
    with torch.autograd.set_multithreading_enabled(not args.backward_on_caller):
        rows = run_bench(args.out, cases, command=shlex.join(command), progress=not args.no_progress, device=device)
    print(format_table(rows))
    print(f"\nwrote {args.out}/results.csv, results.png, results.txt, environment.json")
    return 0


def _selection(args: argparse.Namespace) -> tuple[torch.device, list[Case]]:
    """The device and the cases the options ask for; ``ValueError`` for a bad option."""
    if args.rounds is not None and args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    device = bench_device(args.device)
    return device, select_cases(
        bench_cases(args.groups, quick=args.quick, rounds=args.rounds, device=device), args.only
    )
