"""The symmetric P of a block of rows equals those rows of the whole symmetric P."""

from __future__ import annotations

import pytest
import torch

from torchdr_sc.affinity.knn_union import sorted_neighbour_lists, symmetrize_knn_compact
from torchdr_sc.affinity.shard_union import owners, symmetrize_row_block
from torchdr_sc.distributed import shard_of
from torchdr_sc.knn import knn


def _directed(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    graph = knn(x, k, backend="torch")
    weights = torch.rand(n, k, generator=gen)
    weights[:, -1] = torch.where(weights[:, -1] < 0.2, 0.0, weights[:, -1])  # some zeros
    return graph.indices, weights


def _blocks(indices, weights, world):
    """Every block's sorted lists and the entries each block receives (all-to-all by hand)."""
    n = indices.shape[0]
    shards = [shard_of(n, r, world) for r in range(world)]
    starts = [s.start for s in shards]
    lists = [
        sorted_neighbour_lists(indices[s.start : s.stop], weights[s.start : s.stop]) for s in shards
    ]
    sent = []
    for s, (cols, w) in zip(shards, lists, strict=True):
        k = cols.shape[1]
        ids = torch.arange(s.start, s.stop, dtype=cols.dtype).repeat_interleave(k)
        sent.append((owners(cols.reshape(-1), starts), cols.reshape(-1), ids, w.reshape(-1)))
    return shards, starts, lists, sent


def _receiver(sent, rank):
    """The all-to-all as ``rank`` sees it: the entries every block sends it, in block order."""

    def exchange(dest, *columns):
        del dest, columns  # the same entries, built for every block in _blocks
        parts = [(c[d == rank], i[d == rank], v[d == rank]) for d, c, i, v in sent]
        return tuple(torch.cat([p[j] for p in parts]) for j in range(3))

    return exchange


@pytest.mark.parametrize("mode", ["mean", "sum", "fuzzy_union"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_row_blocks_equal_the_rows_of_the_whole_symmetric_p(mode, world):
    indices, weights = _directed(157, 9)
    whole = symmetrize_knn_compact(indices, weights, mode)
    shards, starts, lists, sent = _blocks(indices, weights, world)
    for rank, (shard, (cols, w)) in enumerate(zip(shards, lists, strict=True)):
        block = symmetrize_row_block(
            cols,
            w,
            mode,
            start=shard.start,
            n=157,
            block_starts=starts,
            exchange=_receiver(sent, rank),
        )
        assert block.row_range == (shard.start, shard.stop)
        assert not block.holds_all_rows or world == 1
        rows = (whole.rows >= shard.start) & (whole.rows < shard.stop)
        assert torch.equal(block.rows.long(), whole.rows[rows].long())
        assert torch.equal(block.cols.long(), whole.cols[rows].long())
        assert torch.equal(block.weights, whole.weights[rows])  # same bits


def test_owners_of_row_ids():
    starts = [0, 4, 8]
    cols = torch.tensor([0, 3, 4, 7, 8, 11], dtype=torch.int32)
    assert owners(cols, starts).tolist() == [0, 0, 1, 1, 2, 2]


def test_a_row_block_is_never_cached_in_obsp():
    from torchdr_sc.adata import cache

    indices, weights = _directed(60, 5)
    _, starts, lists, sent = _blocks(indices, weights, 2)
    cols, w = lists[0]
    block = symmetrize_row_block(
        cols, w, "mean", start=0, n=60, block_starts=starts, exchange=_receiver(sent, 0)
    )
    assert not block.holds_all_rows
    assert not cache.storable(block)
    assert cache.storable(symmetrize_knn_compact(indices, weights, "mean"))
