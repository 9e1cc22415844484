"""The process group of a ``torchrun`` launch (or a single process) and the collectives the trainer needs."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["DistributedContext", "resolve_device"]


def resolve_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """The training device: ``requested``, or CUDA when available, else the CPU.

    Under torchrun every process takes the GPU of its local rank (``cuda`` -> ``cuda:<local_rank>``).

    Args:
        requested: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None.
        local_rank: this process's index on its machine.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {requested!r}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} but CUDA is not available here; use device='cpu'")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    elif device.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    return device


@dataclass
class DistributedContext:
    """Rank, world size and device of this process, plus the reductions used by the trainer.

    :meth:`start` joins the process group that ``torchrun`` describes in the environment
    (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL on GPUs, gloo
    on CPUs. Without torchrun it is a single process and every collective is the identity.

    Args:
        rank: global rank of this process.
        world_size: number of processes.
        device: this process's device.
        owns_group: whether :meth:`close` should destroy the process group.

    Example:
        >>> context = DistributedContext.start("cpu")  # outside torchrun: a single process
        >>> context.world_size, context.is_main, context.all_reduce_sum(torch.tensor([2.0])).item()
        (1, True, 2.0)
    """

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @classmethod
    def start(cls, requested_device: str | None) -> DistributedContext:
        """Joins the torchrun process group if the environment describes one."""
        if dist.is_available() and dist.is_initialized():
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            device = resolve_device(requested_device, local_rank)
            return cls(dist.get_rank(), dist.get_world_size(), device, owns_group=False)
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if world_size > 1 and requested_device is not None and ":" in requested_device:
            raise ValueError(
                f"device={requested_device!r} under torchrun would put every process on one GPU; "
                "use device='cuda' (each process takes the GPU of its local rank) or None"
            )
        device = resolve_device(requested_device, local_rank)
        if world_size == 1:
            return cls(0, 1, device, owns_group=False)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size, device, owns_group=True)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def backend(self) -> str | None:
        """The process group's backend, None for a single process."""
        return dist.get_backend() if self.distributed else None

    def all_reduce_sum(self, values: Tensor) -> Tensor:
        """Sums ``values`` over all processes (in place; also returned)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """True if ``flag`` is true on any process (so all ranks stop at the same step)."""
        if not self.distributed:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

    def gather(self, value: object) -> list:
        """``value`` from every process, in rank order (a picklable object)."""
        if not self.distributed:
            return [value]
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copies rank 0's buffers (BatchNorm running statistics) to every process."""
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def parameter_digests(self, module: nn.Module) -> list[str]:
        """SHA-256 of each process's parameters, in rank order: equal digests mean identical weights."""
        digest = hashlib.sha256()
        for name, parameter in module.named_parameters():
            digest.update(name.encode())
            # reshape(-1) yields the values in logical order with unit stride whatever the memory format.
            digest.update(parameter.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return self.gather(digest.hexdigest())

    def barrier(self) -> None:
        """Waits until every rank gets here (no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leaves the process group if :meth:`start` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
