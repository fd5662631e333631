"""Row sharding across the processes of an initialised ``torch.distributed`` group.

The package never starts a process group at import or construction: under ``torchrun`` the
user's script (or the ``torchdr-sc embed`` command, through :func:`init_from_env`) does, and
``distributed='auto'`` picks it up. Each rank owns a contiguous block of rows: it searches the
neighbours of its rows, computes the gradient of its rows' terms, and the gradients are
all-reduced (summed), so that every rank applies the same update and holds the same
embedding after every step. The same code runs with NCCL on GPUs and gloo on CPUs.

A failure on one rank must end the whole job, never leave the others waiting in a
collective: under ``torchrun`` the launcher stops every worker as soon as one exits with an
error, and :func:`rank_guard` makes a worker exit at once with a message naming its rank.
The process group timeout (:func:`init_from_env`) bounds any remaining wait.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TORCHRUN_HINT = "torchrun --nproc_per_node=2 your_script.py"

#: Default timeout of the collectives of a process group started by :func:`init_from_env`.
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class RowShard:
    """The contiguous block of rows ``[start, stop)`` one process owns."""

    start: int
    stop: int

    @classmethod
    def full(cls, n: int) -> RowShard:
        """All rows (single process)."""
        return cls(0, n)


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and the rows this rank owns.

    Attributes
    ----------
    rank
        This process's rank (0 without a process group).
    world_size
        Number of processes (1 without a process group).
    shard
        The rows ``[start, stop)`` this rank owns.
    n_rows
        Rows of the whole data (``shard.stop`` when unknown).
    """

    rank: int
    world_size: int
    shard: RowShard
    n_rows: int | None = None

    @property
    def n(self) -> int:
        """Rows of the whole data split among the ranks."""
        return self.shard.stop if self.n_rows is None else self.n_rows

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
        """Concatenate every rank's block of rows into the full ``(n, ...)`` tensor.

        Blocks may differ in length by one row (``n`` not divisible by the world size):
        every block is padded to the longest one for the collective (gloo and NCCL gather
        equal shapes only), then trimmed.

        Parameters
        ----------
        local
            This rank's rows, ``(stop - start, ...)``.
        n
            Total number of rows.
        """
        shards = [shard_of(n, r, self.world_size) for r in range(self.world_size)]
        mine = shards[self.rank]
        if local.shape[0] != mine.stop - mine.start:
            msg = (
                f"rank {self.rank} holds {local.shape[0]} rows but owns "
                f"{mine.stop - mine.start} (rows {mine.start}:{mine.stop} of {n})."
            )
            raise ValueError(msg)
        longest = max(s.stop - s.start for s in shards)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in shards]
        dist.all_gather(parts, padded)
        return torch.cat([p[: s.stop - s.start] for p, s in zip(parts, shards, strict=True)], 0)

    def block_starts(self) -> list[int]:
        """First row of every rank's block (rank order)."""
        return [shard_of(self.n, r, self.world_size).start for r in range(self.world_size)]

    def all_gather_concat(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-D ``local`` (any lengths) concatenated in rank order, on every rank.

        The lengths are gathered first; every piece is padded to the longest one for the
        collective (gloo and NCCL gather equal shapes only), then trimmed.
        """
        length = torch.tensor([local.shape[0]], dtype=torch.int64, device=local.device)
        lengths = [torch.empty_like(length) for _ in range(self.world_size)]
        dist.all_gather(lengths, length)
        sizes = [int(x) for x in lengths]
        padded = local.new_zeros(max(sizes))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:size] for p, size in zip(parts, sizes, strict=True)])

    def exchange(self, dest: torch.Tensor, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Send entry ``e`` of every column to rank ``dest[e]``; return what this rank got.

        One all-to-all with uneven counts per column (``all_to_all_single``, which gloo and
        NCCL provide). The received entries come grouped by sending rank, in rank order,
        each group in its sender's order.

        Parameters
        ----------
        dest
            ``(E,)`` integer rank of every entry.
        columns
            ``(E, ...)`` tensors sent entry by entry.
        """
        order = torch.argsort(dest, stable=True)
        send = torch.bincount(dest.to(torch.int64), minlength=self.world_size)
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send)
        send_sizes, recv_sizes = send.tolist(), recv.tolist()
        received = []
        for column in columns:
            out = column.new_empty((sum(recv_sizes), *column.shape[1:]))
            sent = column.index_select(0, order).contiguous()
            dist.all_to_all_single(out, sent, recv_sizes, send_sizes)
            received.append(out)
        return tuple(received)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every rank (``tensor`` is overwritten when contiguous)."""
        tensor = tensor.contiguous()
        dist.broadcast(tensor, src=0)
        return tensor

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            dist.barrier()


def shard_of(n: int, rank: int, world_size: int) -> RowShard:
    """Rows ``[start, stop)`` of ``rank`` when ``n`` rows are split evenly."""
    start = (n * rank) // world_size
    stop = (n * (rank + 1)) // world_size
    return RowShard(start, stop)


def process_group_ready() -> bool:
    """Whether a ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def resolve_distributed(distributed: bool | str, n: int) -> DistContext:
    """Context for ``distributed`` (``'auto'``, ``True`` or ``False``) and ``n`` rows.

    ``'auto'`` uses the process group when one is initialised; ``True`` requires one;
    ``False`` runs on this process alone.

    Raises
    ------
    RuntimeError
        ``distributed=True`` without an initialised process group.
    """
    ready = process_group_ready()
    if distributed is True and not ready:
        msg = (
            "`distributed=True` needs an initialised torch.distributed process group: launch "
            f"with `{TORCHRUN_HINT}` and call torch.distributed.init_process_group() first "
            "(or use the `torchdr-sc embed --nproc N` command), or set distributed='auto'."
        )
        raise RuntimeError(msg)
    if distributed is False or not ready:
        return DistContext(0, 1, RowShard.full(n), n)
    rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, shard_of(n, rank, world), n)


def is_rank_zero() -> bool:
    """True on rank 0 or without a process group (only rank 0 writes files and logs)."""
    return not process_group_ready() or dist.get_rank() == 0


def current_rank() -> int:
    """This process's rank: the process group's, else torchrun's ``RANK``, else 0."""
    if process_group_ready():
        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0"))


def init_from_env(
    device: str | torch.device = "cpu", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> str:
    """Start the process group described by torchrun's environment variables.

    Only commands call this (``torchdr-sc embed``'s workers); the library itself never
    starts a process group. NCCL is used for CUDA devices (each rank on GPU
    ``LOCAL_RANK``), gloo otherwise.

    Parameters
    ----------
    device
        ``'cpu'`` or a CUDA device: picks the backend.
    timeout_s
        Longest wait of any collective before it fails (so a lost rank cannot hang the
        others for ever).

    Returns
    -------
    str
        The backend used, ``'nccl'`` or ``'gloo'``.

    Raises
    ------
    RuntimeError
        When torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
        ``MASTER_PORT``) are missing.
    """
    needed = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    missing = [v for v in needed if v not in os.environ]
    if missing:
        msg = (
            f"no torchrun environment ({', '.join(missing)} not set): launch with "
            f"`{TORCHRUN_HINT}` or use `torchdr-sc embed --nproc N`."
        )
        raise RuntimeError(msg)
    dev = torch.device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=float(timeout_s)))
    return backend


def failure_message(err: BaseException, rank: int | None = None) -> str:
    """One line naming the rank that failed and why."""
    rank = current_rank() if rank is None else rank
    world = os.environ.get("WORLD_SIZE")
    where = f"rank {rank}" + (f" of {world}" if world else "")
    return f"{where} failed: {type(err).__name__}: {err}"


@contextlib.contextmanager
def rank_guard(*, exit_code: int = 1, show_traceback: bool = False) -> Iterator[None]:
    """End this process at once, naming its rank, if the block raises.

    Use around the body of a script launched with ``torchrun``: the failing rank prints
    ``torchdr-sc: rank R of W failed: <error>`` on stderr and exits with ``exit_code``
    without waiting for its peers (``os._exit``: no collective in an exit handler can
    hang); ``torchrun`` then stops the other ranks and exits non-zero.

    Parameters
    ----------
    exit_code
        Exit status of the failing process.
    show_traceback
        Also print the traceback.
    """
    try:
        yield
    except SystemExit as err:
        if not err.code:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(err.code if isinstance(err.code, int) else exit_code)
    except BaseException as err:  # every failure must end the process
        if show_traceback:
            traceback.print_exc(file=sys.stderr)
        print(f"torchdr-sc: {failure_message(err)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(exit_code)
