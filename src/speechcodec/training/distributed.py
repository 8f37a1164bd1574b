"""The device a run trains on, and the one place where processes of a multi-GPU run talk.

Under ``torchrun`` (WORLD_SIZE > 1) every rank trains a replica with DistributedDataParallel;
rank 0 validates, logs and writes, and sends what it decided (rate goal, roll-back) to the others
with :meth:`Distributed.broadcast`. With one process every method is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from speechcodec.errors import TrainingError


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU has bfloat16 instructions (x86 AVX512-BF16 / AMX, Arm BF16); None when unknown.

    Without them torch emulates bfloat16, and autocast on the CPU runs many times slower than
    float32.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' asked for, but torch sees no GPU (leave --device out: "
                            "it trains on the CPU then)")
    return torch.device(name)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``world`` processes, this one ``rank``, on ``device``."""

    world: int
    rank: int
    device: torch.device

    @classmethod
    def from_environment(cls, device_name: str) -> Distributed:
        """Read torchrun's variables (none: one process) and join the process group."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        device = pick_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        if world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(world, int(os.environ.get("RANK", "0")), device)

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, logs and writes."""
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.device.type} x{self.world}" if self.world > 1 else str(self.device)

    def wrap(self, module: torch.nn.Module | None) -> torch.nn.Module | None:
        """The module as the training step calls it: in DistributedDataParallel across processes."""
        if self.world > 1 and module is not None:
            return torch.nn.parallel.DistributedDataParallel(module)
        return module

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (as float64, on the device: NCCL wants GPU tensors)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(tensor, 0)
        return float(tensor)

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a one-element tensor over the ranks."""
        value = value.detach()
        if self.world > 1:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.world
        return float(value)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()
