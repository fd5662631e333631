"""Benchmarks of torchdr-sc side by side with umap-learn, openTSNE, scanpy and TorchDR.

The modules here import only the standard library and numpy at module level, so that the
worker (:mod:`benchmarks.worker`) can also run inside the separate TorchDR virtual
environment, which does not have torchdr-sc installed.
"""
