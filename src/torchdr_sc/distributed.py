"""Row sharding across the processes of an initialised ``torch.distributed`` group.

The package never starts a process group: under ``torchrun`` the user's script (or the
``torchdr-sc embed`` command) does, and ``distributed='auto'`` picks it up. Each rank owns a
contiguous block of rows; gradients are all-reduced (summed) so that every rank applies the
same update and holds the same embedding after every step. The same code runs with NCCL on
GPUs and gloo on CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .embed.exact import RowShard

TORCHRUN_HINT = "torchrun --nproc_per_node=2 your_script.py"


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and the rows this rank owns."""

    rank: int
    world_size: int
    shard: RowShard

    @property
    def active(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    def sync(self, grad: torch.Tensor) -> torch.Tensor:
        """Sum ``grad`` over all ranks (in place)."""
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad

    def reduce_scalar(self, value: torch.Tensor) -> torch.Tensor:
        """Sum a 0-d tensor over all ranks."""
        out = value.reshape(1).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out[0]

    def all_gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Concatenate every rank's block of rows into the full ``(n, ...)`` tensor."""
        sizes = [shard_of(n, r, self.world_size) for r in range(self.world_size)]
        parts = [
            torch.empty((s.stop - s.start, *local.shape[1:]), dtype=local.dtype, device=local.device)
            for s in sizes
        ]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts, 0)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every rank (in place)."""
        dist.broadcast(tensor, src=0)
        return tensor


def shard_of(n: int, rank: int, world_size: int) -> RowShard:
    """Rows ``[start, stop)`` of ``rank`` when ``n`` rows are split evenly."""
    start = (n * rank) // world_size
    stop = (n * (rank + 1)) // world_size
    return RowShard(start, stop)


def resolve_distributed(distributed: bool | str, n: int) -> DistContext:
    """Context for ``distributed`` (``'auto'``, ``True`` or ``False``) and ``n`` rows.

    ``'auto'`` uses the process group when one is initialised; ``True`` requires one;
    ``False`` runs on this process alone.
    """
    ready = dist.is_available() and dist.is_initialized()
    if distributed is True and not ready:
        msg = (
            "`distributed=True` needs an initialised torch.distributed process group: launch "
            f"with `{TORCHRUN_HINT}` and call torch.distributed.init_process_group() first "
            "(or use the `torchdr-sc embed --nproc N` command), or set distributed='auto'."
        )
        raise RuntimeError(msg)
    if distributed is False or not ready:
        return DistContext(0, 1, RowShard.full(n))
    rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, shard_of(n, rank, world))


def is_rank_zero() -> bool:
    """True on rank 0 or without a process group (only rank 0 writes files and logs)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
