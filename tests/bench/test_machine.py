import re
import subprocess
import sys

import pytest
import torch

from ecanet.bench.machine import _print_folder, machine_description, machine_folder


@pytest.mark.parametrize(
    ("cpu", "capability", "folder"),
    [
        ("AMD EPYC", "AVX2", "cpu-epyc-avx2"),
        ("AMD EPYC 7B13 64-Core Processor", "AVX2", "cpu-epyc-avx2"),
        ("Intel(R) Xeon(R) Processor", "AVX512", "cpu-xeon-avx512"),
        ("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", "AVX2", "cpu-core-avx2"),
        ("AMD Ryzen 9 7950X 16-Core Processor", "AVX512", "cpu-ryzen-avx512"),
        ("Neoverse-V1", "SVE256", "cpu-neoverse-sve256"),
        ("QEMU Virtual CPU version 2.5+", "DEFAULT", "cpu-default"),
        ("", "AVX2", "cpu-avx2"),
    ],
)
def test_cpu_folders_name_the_family_and_the_instruction_set(cpu, capability, folder):
    assert machine_folder({"device": "cpu", "cpu": cpu, "cpu_capability": capability}) == folder


@pytest.mark.parametrize(
    ("gpu", "folder"),
    [
        ("NVIDIA H100 80GB HBM3", "cuda-h100"),
        ("NVIDIA H200", "cuda-h200"),
        ("NVIDIA A100-SXM4-80GB", "cuda-a100"),
        ("NVIDIA GeForce RTX 4090", "cuda-rtx-4090"),
        ("Tesla V100-PCIE-16GB", "cuda-v100"),
        ("NVIDIA", "cuda"),
    ],
)
def test_gpu_folders_name_the_model_without_vendor_or_packaging(gpu, folder):
    description = {"device": "cuda:0", "gpu": gpu, "cpu": "AMD EPYC", "cpu_capability": "AVX2"}
    assert machine_folder(description) == folder


def test_this_machine_gets_a_cpu_folder_and_the_module_prints_it():
    description = machine_description()
    folder = machine_folder(description)
    assert folder.startswith("cpu-")
    assert folder.endswith(torch.backends.cpu.get_cpu_capability().lower().replace("_", "-"))
    for device in ([], ["cpu"]):
        printed = subprocess.run(
            [sys.executable, "-m", "ecanet.bench.machine", *device], capture_output=True, text=True, check=True
        ).stdout
        assert printed == folder + "\n"


def test_the_module_refuses_a_device_this_machine_lacks_or_a_second_argument(capsys):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for arguments, message in (
        ([f"cuda:{count}"], f"asked for, but this machine has {count} usable CUDA devices"),
        (["tpu"], "benchmark device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        (["cpu", "cuda"], "usage: python -m ecanet.bench.machine"),
    ):
        with pytest.raises(SystemExit, match=re.escape(message)):
            _print_folder(arguments)
    assert not capsys.readouterr().out
