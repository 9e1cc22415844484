import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from ecanet.training.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot serialise this")


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(2).tolist()


def test_rng_states_survive_a_weights_only_round_trip(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in both generators
    np.random.randn()
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = draws()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draws() == expected


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "weight": torch.ones(1000)}, path)
    with pytest.raises(RuntimeError, match="cannot serialise"):
        save_checkpoint({"epoch": 2, "weight": torch.zeros(100_000), "extra": Unpicklable()}, path)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weight"], torch.ones(1000))
    assert [entry.name for entry in tmp_path.iterdir()] == ["last.pt"]


WRITER = textwrap.dedent(
    """
    import sys, torch
    from ecanet.training.checkpoint import save_checkpoint
    version = 0
    while True:
        version += 1
        save_checkpoint({"version": version, "data": torch.full((2_000_000,), float(version))}, sys.argv[1])
        print(version, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_during_writes_leaves_a_complete_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.pt"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    written = [int(process.stdout.readline()) for _ in range(3)]
    time.sleep(0.05)  # kill at an arbitrary point, most likely in the middle of a write
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = load_checkpoint(path)
    assert state["version"] >= written[-1]
    assert torch.equal(state["data"], torch.full((2_000_000,), float(state["version"])))


def test_loading_refuses_pickled_code(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"payload": Exploit()}, path)
    with pytest.raises(ValueError, match=r"evil.pt': it refers to print, which weights_only=True refuses"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: b"", "the file is empty"),
        (lambda data: data[: len(data) // 2], "it is truncated, corrupted or not written by torch.save"),
        (lambda data: data[:100], "it is truncated, corrupted or not written by torch.save"),
        (lambda data: b"epoch: 3\n", "it is truncated, corrupted or not written by torch.save"),
    ],
    ids=["empty", "half", "header-only", "text"],
)
def test_an_unreadable_file_is_refused_by_name(tmp_path, damage, reason) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "weight": torch.ones(1000)}, path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=f"cannot read the checkpoint '{path}': {reason}$"):
        load_checkpoint(path)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))
