"""The one parser of ``random_state``, and the local generators built from its seed.

Every layer reads ``random_state`` through :func:`resolve_seed`: ``tl`` / ``pp`` record the
int it returns, the estimators seed their generators with it (and keep it as ``seed_``), the
streamed search seeds its IVF training with it. An int, a numpy ``RandomState`` /
``Generator``, a ``torch.Generator`` and ``None`` are handled the same way everywhere, and
global random number generators are never seeded (CONTRIBUTING.md, section 3).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

#: Seeds are ints in ``[0, MAX_SEED]``: the range every consumer of the seed accepts (numpy,
#: torch, and faiss, whose k-means seed is a C ``int``), and one every AnnData writer stores.
MAX_SEED = 2**31 - 1
#: Fresh seeds are drawn in ``[0, SEED_BOUND)``.
SEED_BOUND = MAX_SEED


def _fresh_seed(shared: bool) -> int:
    """A fresh seed; with ``shared``, rank 0's under an initialised process group."""
    import torch.distributed as dist

    seed = int(np.random.default_rng().integers(0, SEED_BOUND))
    if shared and dist.is_available() and dist.is_initialized():
        box = torch.tensor([seed], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            box = box.cuda()
        dist.broadcast(box, src=0)
        seed = int(box.item())
    return seed


def _checked_int(random_state: Any) -> int:
    """An int (or a whole float) ``random_state`` as an int in ``[0, MAX_SEED]``."""
    value = int(random_state)
    if not 0 <= value <= MAX_SEED:
        msg = (
            f"`random_state` must be an int in [0, {MAX_SEED}] (the seeds numpy, torch and "
            f"faiss all accept), a numpy / torch generator or None; got {random_state!r}."
        )
        raise ValueError(msg)
    return value


def resolve_seed(random_state: Any, *, shared: bool = True) -> int:
    """Turn ``random_state`` into the int seed that is used and recorded.

    Parameters
    ----------
    random_state
        An int in ``[0, 2**31 - 1]`` (or a whole float such as ``0.0``), a
        :class:`numpy.random.RandomState` / :class:`numpy.random.Generator` /
        :class:`torch.Generator` (a seed is drawn from it), or ``None`` (a fresh seed is
        drawn, and recorded so that the run can be reproduced).
    shared
        For ``None`` under an initialised ``torch.distributed`` group: every rank gets rank
        0's fresh seed (a collective call: every rank must make it). ``False`` draws one
        per process without communicating.

    Returns
    -------
    An int seed in ``[0, 2**31 - 1]`` (:data:`MAX_SEED`): an int is returned as given, so
    the seed recorded in ``uns`` is the one the user passed, and ``write_h5ad`` /
    ``write_zarr`` store it.

    Raises
    ------
    TypeError
        ``random_state`` is none of the above.
    ValueError
        An int outside ``[0, 2**31 - 1]`` (negative seeds are refused, as numpy does,
        rather than silently mapped to another seed).
    """
    if isinstance(random_state, bool):
        pass
    elif isinstance(random_state, numbers.Integral):
        return _checked_int(random_state)
    elif isinstance(random_state, float) and random_state.is_integer():
        return _checked_int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, SEED_BOUND))
    elif isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, SEED_BOUND))
    elif isinstance(random_state, torch.Generator):
        return int(torch.randint(0, SEED_BOUND, (1,), generator=random_state))
    elif random_state is None:
        return _fresh_seed(shared)
    msg = (
        "`random_state` must be an int, a numpy RandomState / Generator, a torch.Generator "
        f"or None; got {random_state!r}."
    )
    raise TypeError(msg)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A local :class:`torch.Generator` on ``device`` seeded with ``seed`` (an int)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) % (2**63))
    return gen


def seed_argument(random_state: Any, rng: Any, default: Any = 0) -> Any:
    """The seed of a call that takes scanpy's ``random_state`` and scanpy 1.13's ``rng``.

    They mean the same thing; ``rng`` is used when given and ``random_state`` was left at its
    ``default``.

    Raises
    ------
    ValueError
        Both given (``random_state`` not at its default and ``rng`` not ``None``).
    """
    if rng is None:
        return random_state
    left = random_state is default or (
        isinstance(random_state, int) and isinstance(default, int) and random_state == default
    )
    if not left:
        msg = (
            "pass one of `random_state` and `rng` (scanpy's old and new names of the same "
            f"seed); got random_state={random_state!r} and rng={rng!r}."
        )
        raise ValueError(msg)
    return rng
