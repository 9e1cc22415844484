"""Pinning glibc's thresholds (ecanet.bench.allocator), observed in fresh processes: where a 24 MB tensor lives."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
import json, sys
import torch
from ecanet.bench.allocator import pin_glibc_thresholds

pinned = pin_glibc_thresholds() if sys.argv[1] == "pin" else None
tensor = torch.empty(6 << 20)  # 24 MiB: mapped of its own under glibc's default 128 KiB threshold
address = tensor.data_ptr()
for line in open("/proc/self/maps"):
    fields = line.split()
    start, end = (int(part, 16) for part in fields[0].split("-"))
    if start <= address < end:
        print(json.dumps({"pinned": pinned, "in_heap": fields[-1] == "[heap]"}))
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's"
)


def _run(mode: str) -> dict:
    source = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", CHECK, mode], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


@glibc
def test_pinned_thresholds_put_a_24_mb_tensor_on_the_heap():
    assert _run("pin") == {"pinned": True, "in_heap": True}


@glibc
def test_by_default_a_24_mb_tensor_is_mapped_of_its_own():
    assert _run("default") == {"pinned": None, "in_heap": False}
