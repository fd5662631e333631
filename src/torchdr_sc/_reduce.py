"""Sums whose rounding does not depend on the number of CPU threads.

PyTorch reduces a whole tensor to one number (``x.sum()``) by splitting it into as many
ranges as there are threads once it has 32,768 elements or more, and adds the partial sums:
the result's last bits change with ``torch.set_num_threads``. In an iterative fit (the
t-SNE normaliser ``Z`` is such a sum, recomputed every iteration) those bits grow into a
different embedding, so the same seed gave different pictures with 1 and 2 threads.

A reduction along one dimension with several outputs (row sums) is computed by one thread per
output, in the same order whatever the thread count. :func:`fixed_order_sum` uses only those:
it sums fixed-size chunks (one output each), then the chunk sums, and so on, so that every
addition happens in an order set by the tensor's size alone.
"""

from __future__ import annotations

import torch

__all__ = ["CHUNK", "fixed_order_mean", "fixed_order_std", "fixed_order_sum"]

#: Elements per chunk of :func:`fixed_order_sum`: below PyTorch's parallel grain (32,768),
#: so a chunk is never split between threads, and large enough that the chunk sums are few.
CHUNK = 4096


def fixed_order_sum(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The sum of all elements of ``x`` (a 0-d tensor), bitwise the same for any number of
    threads.

    Parameters
    ----------
    x : torch.Tensor
        Any shape; read as a flat vector.
    dtype : torch.dtype, optional
        Accumulation (and result) dtype; default: ``x``'s (as :meth:`torch.Tensor.sum`).

    Returns
    -------
    torch.Tensor
        0-d, on ``x``'s device.
    """
    flat = x.reshape(-1)
    if dtype is not None:
        flat = flat.to(dtype)
    while flat.numel() > CHUNK:
        pad = (-flat.numel()) % CHUNK
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        flat = flat.view(-1, CHUNK).sum(1)
    return flat.sum()


def fixed_order_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of all elements of ``x`` (see :func:`fixed_order_sum`)."""
    return fixed_order_sum(x) / max(1, x.numel())


def fixed_order_std(x: torch.Tensor) -> torch.Tensor:
    """The sample standard deviation (``n - 1`` in the denominator, as
    :meth:`torch.Tensor.std`) of all elements of ``x`` (see :func:`fixed_order_sum`)."""
    centred = x - fixed_order_mean(x)
    return (fixed_order_sum(centred * centred) / max(1, x.numel() - 1)).sqrt()
