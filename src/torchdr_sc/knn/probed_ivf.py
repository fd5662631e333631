"""Approximate kNN on CPU: an IVF index probed per query, scanned list by list with matrix
products and a shrinking distance bound.

The index is that of faiss's ``IndexIVFFlat`` (k-means cells, each query visits the
``nprobe`` cells with the nearest centroids; Jégou, Douze & Schmid, *Product quantization for
nearest neighbor search*, IEEE TPAMI 2011), but the scan is turned inside out, in the spirit
of the list-major GPU scan of Johnson, Douze & Jégou (*Billion-scale similarity search with
GPUs*, IEEE Trans. Big Data 2019):

1. every query first takes the best ``k`` points of its own cell (one matrix product per
   cell), whose worst cost becomes its bound;
2. then, probe rank by probe rank, the queries whose ``r``-th cell is ``c`` are compared with
   the points of ``c`` in one dense product per tile (points x queries). Only entries below
   the query's bound survive: the minima of groups of 16 points are compared first
   (:func:`_below`), so the full comparison and ``nonzero`` run on a few groups only, with
   no per-query heap. A rank's survivors are merged into every query's best ``k`` at once
   and the bound shrinks for the next rank.

Almost every entry fails the bound, so the work is the matrix products (BLAS speed) plus one
vectorised minimum per entry, where faiss's CPU scan computes each distance on its own and
pushes it through a heap. Measured on the benchmark's synthetic data (a 50-D Gaussian
mixture of full intrinsic dimension, the hard case) on 2 CPU cores, default cells and probes
(``benchmarks/results/knn-methods-v2-k15.json``, ``-k90.json``): it reaches a recall of
0.95 or more of 15 and of 90 neighbours from 200k to 1M cells, faster than pynndescent
(umap-learn's search) and than faiss's IVF index with its defaults (the figures are in
``benchmarks/README.md``).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch

from .._threads import recheck_threads
from .common import drop_self
from .torch_ivf import GROUP, TRAIN_PER_CELL, grouped_topk, kmeans

#: Costs per product tile (cell points x queries; a cell's queries are split to fit).
TILE_ENTRIES = 1 << 21
#: Queries per block of the merge of a rank's survivors into the best ``k``.
MERGE_ROWS = 1 << 16
#: Survivors gathered (over a rank's tiles) before they are merged.
MERGE_ENTRIES = 1 << 20
#: Costs per block of the exact search of rows whose visited cells held too few points.
SHORT_ROW_ENTRIES = 1 << 24


#: Fewest cells visited per query for up to 15 neighbours (UMAP's), and for more (the
#: t-SNE family's 90): :func:`default_nprobe`.
FEWEST_PROBES = 8
FEWEST_PROBES_MANY = 16


def default_nlist(n: int) -> int:
    """Cells: ``round(0.5 sqrt(n))``, at least 1, at most ``n // TRAIN_PER_CELL``.

    Half the ``sqrt(n)`` cells of :func:`~torchdr_sc.knn.torch_ivf.default_nlist`: cells
    twice as large make each product tile twice as large (fewer, fuller BLAS calls and less
    work per tile outside them) and reach a given recall with fewer probes. Searches of 15
    neighbours on the benchmark's synthetic data (module doc), 200k: 224 cells and 8 probes
    were both faster and more accurate than 447 cells and 12 probes.
    """
    return int(max(1, min(round(0.5 * math.sqrt(n)), n // TRAIN_PER_CELL)))


def default_nprobe(nlist: int, k: int = 15) -> int:
    """Cells visited per query: ``round(0.5 sqrt(nlist) (k / 15)^0.15)``, at least 8 (16 for
    more than 15 neighbours), at most ``nlist``.

    More neighbours need a few more cells (the ``k``-th neighbour lies further out). Recall
    on the benchmark's synthetic data (module doc) with :func:`default_nlist`'s cells, 15
    neighbours: 200k (224 cells) 7 probed -> 0.954, 8 -> 0.968; 1M (500 cells) 10 -> 0.948,
    11 -> 0.957, 12 -> 0.965. 90 neighbours: 200k 8 -> 0.950, 10 -> 0.973; 1M 14 -> 0.963,
    16 -> 0.974. The floor of 16 for the t-SNE family's 90 neighbours comes from the
    simulated atlas, whose cell types touch: at 100k cells (158 cells) 8 probes found fewer
    true neighbours and left t-SNE's cluster layout further from the data's (the
    centroid-distance correlation 0.44 with 8 probes, 0.50 with 16, as with the exact graph;
    ``benchmarks/README.md``).
    """
    wanted = round(0.5 * math.sqrt(nlist) * (max(k, 1) / 15) ** 0.15)
    fewest = FEWEST_PROBES if k <= 15 else FEWEST_PROBES_MANY
    return int(min(nlist, max(fewest, wanted)))


def _alpha(largest: bool) -> float:
    """Factor of the inner product in the costs (see :func:`_costs`)."""
    return -1.0 if largest else -2.0


def _bias(Y: torch.Tensor, largest: bool) -> torch.Tensor:
    """The per-point term of the costs: ``|y|^2`` (squared distance), 0 (cosine)."""
    return torch.zeros_like(Y[:, 0]) if largest else Y.square().sum(1)


def _costs(q: torch.Tensor, y: torch.Tensor, bias: torch.Tensor, largest: bool) -> torch.Tensor:
    """``(len(q), len(y))`` costs, smaller is nearer, up to a constant per query.

    ``|y|^2 - 2 q.y`` is the squared distance minus ``|q|^2``, ``-q.y`` the cosine cost of
    normalised rows; rows are only ever compared within a query, so the constant is never
    added. A point whose bias is ``+inf`` (the padding of a cell) costs ``+inf``.
    """
    return torch.addmm(bias[None, :], q, y.T, alpha=_alpha(largest))


def _padded(Y: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Y`` and ``bias`` followed by padding rows (zeros, bias ``+inf``) up to whole groups."""
    extra = -Y.shape[0] % GROUP
    pad = torch.zeros((extra, Y.shape[1]), dtype=Y.dtype, device=Y.device)
    inf = torch.full((extra,), float("inf"), dtype=bias.dtype, device=bias.device)
    return torch.cat([Y, pad]), torch.cat([bias, inf])


def _cells(
    X: torch.Tensor, C: torch.Tensor, n_best: int, largest: bool, block: int = 1 << 15
) -> torch.Tensor:
    """The ``n_best`` cells nearest to every row of ``X``, nearest first ``(m, n_best)``."""
    Cp, bias = _padded(C, _bias(C, largest))
    out = torch.empty((X.shape[0], n_best), dtype=torch.int64, device=X.device)
    for s in range(0, X.shape[0], block):
        cost = _costs(X[s : s + block], Cp, bias, largest)
        out[s : s + block] = grouped_topk(cost, n_best, largest=False, sorted=True)
    return out


def _below(cost_t: torch.Tensor, bound: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and points of the entries of ``cost_t`` (points x queries) under the query's
    ``bound``, in query order.

    The points are a whole number of groups of ``GROUP`` with a stride (point ``g + i s`` is
    in group ``g``): the groups' minima are the elementwise minimum of ``GROUP`` contiguous
    blocks (one vectorised pass that writes a sixteenth of the entries) and only the groups
    holding an entry under the bound are read again. This replaces a comparison and a
    ``nonzero`` over every entry when, as in the scan, few entries pass.
    """
    points, queries = cost_t.shape
    stride = points // GROUP
    minima = cost_t.view(GROUP, stride, queries).amin(0)
    query, group = (minima < bound[None, :]).T.nonzero(as_tuple=True)
    point = group[:, None] + torch.arange(GROUP, device=cost_t.device) * stride
    under = torch.take(cost_t, point * queries + query[:, None]) < bound[query, None]
    h, i = under.nonzero(as_tuple=True)
    return query[h], point[h, i]


def _runs(query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs of equal consecutive values: each entry's run, each run's first entry and length."""
    is_first = torch.ones_like(query, dtype=torch.bool)
    is_first[1:] = query[1:] != query[:-1]
    first = is_first.nonzero().view(-1)
    run = torch.cumsum(is_first, 0) - 1
    length = torch.diff(first, append=first.new_tensor([query.shape[0]]))
    return run, first, length


def _slots(
    query: torch.Tensor, cost: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Each entry's run (a query's contiguous entries) and its slot among them, and whether
    a run holds more than ``k`` entries; slots ``0 .. k-1`` of such a run go to its ``k``
    cheapest."""
    run, first, length = _runs(query)
    slot = torch.arange(query.shape[0], device=query.device) - first[run]
    crowded = (length > k)[run].nonzero().view(-1)
    if crowded.numel():  # rare: sort those runs' entries by cost, keeping runs together
        order = crowded[torch.argsort(cost[crowded])]
        order = order[torch.argsort(run[order], stable=True)]
        sub_run, sub_first, _ = _runs(run[order])
        slot[order] = torch.arange(order.shape[0], device=order.device) - sub_first[sub_run]
    return run, slot, bool(crowded.numel())


class _Scan:
    """The search state: data in cell order, the queries' best costs and positions.

    Every cell's points are followed by padding rows up to a whole number of ``GROUP``
    (zeros of cost ``+inf``, at most ``GROUP - 1`` per cell), so that :func:`_below` and
    :func:`~torchdr_sc.knn.torch_ivf.grouped_topk` can view any cell's costs in groups.
    """

    def __init__(self, Xs, Qs, data_cell, query_cells, nlist, k, largest):
        members = torch.argsort(data_cell, stable=True)
        counts = torch.bincount(data_cell, minlength=nlist)
        padded = (counts + GROUP - 1) // GROUP * GROUP
        start = torch.cumsum(padded, 0) - padded
        self.cell_start, self.cell_size = start.tolist(), padded.tolist()
        cell = data_cell[members]
        in_cell = (
            torch.arange(members.shape[0], device=Xs.device)
            - (torch.cumsum(counts, 0) - counts)[cell]
        )
        slot = start[cell] + in_cell
        total = int(padded.sum())
        self.Y = Xs.new_zeros((total, Xs.shape[1]))
        self.Y[slot] = Xs[members]
        self.bias = Xs.new_full((total,), float("inf"))
        self.bias[slot] = _bias(Xs, largest)[members]
        self.ids = torch.zeros(total, dtype=torch.int64, device=Xs.device)  # padding -> 0
        self.ids[slot] = members
        self.Q, self.query_cells, self.k, self.largest = Qs, query_cells, k, largest
        m = Qs.shape[0]
        self.best = torch.full((m, k), float("inf"), dtype=Xs.dtype, device=Xs.device)
        small = total < 2**31  # positions in the padded layout: int32 halves that buffer
        pos_dtype = torch.int32 if small else torch.int64
        self.best_pos = torch.zeros((m, k), dtype=pos_dtype, device=Xs.device)

    def _tiles(self, rank: int):
        """``(first slot, end slot, queries)``: the queries whose probe ``rank`` is a cell,
        against that cell, in tiles of at most :data:`TILE_ENTRIES` costs."""
        cells = self.query_cells[:, rank]
        order = torch.argsort(cells, stable=True)
        per_cell = torch.bincount(cells, minlength=len(self.cell_size)).tolist()
        s = 0
        for a, size, n_q in zip(self.cell_start, self.cell_size, per_cell, strict=True):
            step = max(GROUP, TILE_ENTRIES // max(1, size))
            for t in range(s, s + n_q, step) if size else ():
                yield a, a + size, order[t : min(s + n_q, t + step)]
            s += n_q

    def own_cells(self) -> None:
        """Step 1: every query's best ``k`` among the points of its nearest cell."""
        for a, b, q in self._tiles(0):
            cost = _costs(self.Q.index_select(0, q), self.Y[a:b], self.bias[a:b], self.largest)
            top = min(self.k, b - a)
            pos = grouped_topk(cost, top, largest=False, sorted=False)
            self.best[q, :top] = cost.gather(1, pos)
            self.best_pos[q, :top] = (pos + a).to(self.best_pos.dtype)

    def probe_rank(self, rank: int) -> None:
        """Step 2 for one probe rank: the entries under each query's bound, merged into the
        best ``k`` whenever :data:`MERGE_ENTRIES` have gathered (a query's entries all come
        from one tile, so they are never split between two merges)."""
        bound = self.best.amax(1)  # rows are kept unsorted until the end (cheaper merges)
        found: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        gathered = 0
        for a, b, q in self._tiles(rank):
            cost_t = torch.addmm(  # points x queries: the layout :func:`_below` reads fast
                self.bias[a:b, None],
                self.Y[a:b],
                self.Q.index_select(0, q).T,
                alpha=_alpha(self.largest),
            )
            row, col = _below(cost_t, bound.index_select(0, q))
            found.append((q[row], torch.take(cost_t, col * q.shape[0] + row), col + a))
            gathered += row.shape[0]
            if gathered >= MERGE_ENTRIES:
                self._merge(*(torch.cat(part) for part in zip(*found, strict=True)))
                found, gathered = [], 0
        if found:
            self._merge(*(torch.cat(part) for part in zip(*found, strict=True)))

    def _merge(self, query: torch.Tensor, cost: torch.Tensor, pos: torch.Tensor) -> None:
        """Merge entries (each query's entries contiguous) into the best ``k``, in blocks of
        :data:`MERGE_ROWS` queries."""
        if query.numel() == 0:
            return
        k = self.k
        run, slot, crowded = _slots(query, cost, k)
        if crowded:  # drop the entries past the k cheapest of their query
            keep = slot < k
            run, slot, query, cost, pos = run[keep], slot[keep], query[keep], cost[keep], pos[keep]
        n_runs = int(run[-1]) + 1
        touched = torch.empty(n_runs, dtype=query.dtype, device=query.device)
        touched[run] = query
        block_runs = torch.arange(0, n_runs + MERGE_ROWS, MERGE_ROWS, device=run.device)
        edges = torch.searchsorted(run, block_runs).tolist()
        for s, (i, j) in zip(range(0, n_runs, MERGE_ROWS), pairwise(edges), strict=True):
            r = touched[s : s + MERGE_ROWS]
            width = int(slot[i:j].max()) + 1  # the block's most entries for one query
            new = torch.full((r.shape[0], width), float("inf"), dtype=cost.dtype, device=r.device)
            new_pos = torch.zeros((r.shape[0], width), dtype=self.best_pos.dtype, device=r.device)
            new[run[i:j] - s, slot[i:j]] = cost[i:j]
            new_pos[run[i:j] - s, slot[i:j]] = pos[i:j].to(new_pos.dtype)
            both = torch.cat([self.best[r], new], 1)
            both_pos = torch.cat([self.best_pos[r], new_pos], 1)
            d, best = both.topk(k, 1, largest=False, sorted=False)
            self.best[r], self.best_pos[r] = d, both_pos.gather(1, best)

    def complete_short_rows(self) -> None:
        """Rows whose visited cells held fewer than ``k`` points: searched exactly, in blocks
        of at most :data:`SHORT_ROW_ENTRIES` costs."""
        short = torch.isinf(self.best).any(1).nonzero().view(-1)
        step = max(1, SHORT_ROW_ENTRIES // self.Y.shape[0])
        for s in range(0, short.shape[0], step):
            q = short[s : s + step]
            cost = _costs(self.Q[q], self.Y, self.bias, self.largest)
            d, pos = cost.topk(self.k, 1, largest=False, sorted=True)
            self.best[q], self.best_pos[q] = d, pos.to(self.best_pos.dtype)

    def neighbours(self, drop_query: bool) -> torch.Tensor:
        """Every query's best as point indices, nearest first, in blocks of
        :data:`MERGE_ROWS` rows; ``drop_query``: query ``i`` is point ``i`` and leaves its
        row (:func:`~torchdr_sc.knn.common.drop_self`)."""
        m, k = self.best.shape
        out = torch.empty((m, k - int(drop_query)), dtype=torch.int64, device=self.best.device)
        for s in range(0, m, MERGE_ROWS):
            order = self.best[s : s + MERGE_ROWS].argsort(1)
            found = self.ids[self.best_pos[s : s + MERGE_ROWS].gather(1, order).long()]
            out[s : s + MERGE_ROWS] = drop_self(found, s) if drop_query else found
        return out


def probed_ivf_select(
    Xs: torch.Tensor,
    Qs: torch.Tensor,
    k: int,
    *,
    largest: bool,
    self_search: bool,
    nlist: int | None = None,
    nprobe: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Candidate neighbour indices ``(m, k)`` of the rows of ``Qs`` among the rows of ``Xs``.

    The contract of :func:`~torchdr_sc.knn.torch_ivf.ivf_select` (same parameters), with
    ``nprobe`` the cells visited per query (default :func:`default_nprobe`); rows come out
    sorted by increasing distance.
    """
    n = Xs.shape[0]
    nlist = default_nlist(n) if nlist is None else max(1, min(nlist, n))
    nprobe = default_nprobe(nlist, k) if nprobe is None else max(1, min(nprobe, nlist))
    C = kmeans(Xs, nlist, generator)
    query_cells = _cells(Qs, C, nprobe, largest)
    data_cell = query_cells[:, 0] if self_search else _cells(Xs, C, 1, largest)[:, 0]
    kk = min(n, k + int(self_search))
    scan = _Scan(Xs, Qs, data_cell, query_cells, nlist, kk, largest)
    scan.own_cells()
    for rank in range(1, nprobe):
        recheck_threads()  # follow a competitor that starts during a long search
        scan.probe_rank(rank)
    scan.complete_short_rows()
    return scan.neighbours(drop_query=self_search)
