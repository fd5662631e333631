"""The objectives: the gradient of the attraction over P's edges plus a repulsion.

- :mod:`~torchdr_sc.objective.exact`: exact all-pairs gradients of SNE, t-SNE and
  TSNEkhorn, computed in row blocks (no ``n x n`` matrix).
- :mod:`~torchdr_sc.objective.tsnekhorn`: TSNEkhorn's gradient (doubly stochastic output
  similarity from Sinkhorn potentials), dense or with the FFT grid's kernel sums.
- :mod:`~torchdr_sc.objective.infonce`: InfoTSNE's InfoNC-t-SNE repulsion, the negatives
  shared by blocks of rows (the attraction is t-SNE's), and its transform version.
- :mod:`~torchdr_sc.objective.sampled`: negative-sampled gradients with edge sampling (UMAP,
  LargeVis): the edge schedule, the kernels and the scatter of the pair terms.
- :mod:`~torchdr_sc.objective.pairs`: the per-pair arithmetic shared by the eager and the
  compiled epoch, with the hashed negative draws.
- :mod:`~torchdr_sc.objective.epoch`: one negative-sampling epoch as a gradient function
  for the loop (eager, compiled into one loop, or one Triton kernel on CUDA);
  :mod:`~torchdr_sc.objective.aot_epoch` keeps the compiled CPU loop on disk, and
  :mod:`~torchdr_sc.objective.schedule_sorted` finds an epoch's edges without a mask.
"""
