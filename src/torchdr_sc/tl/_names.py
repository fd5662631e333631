"""scanpy's names of estimator parameters, declared once per ``tl`` function family.

``tl`` takes scanpy's name for a meaning the estimator names differently (TorchDR's
names); :func:`torchdr_sc.adata.estimator_options` then refuses the estimator's name in
``**kwargs`` and suggests scanpy's.
"""

from __future__ import annotations

from .._validation import check_option
from ..adata import ScanpyNames

#: t-SNE's ``metric`` as scanpy (scikit-learn) means it -> the estimators' ``metric_in``:
#: scikit-learn squares euclidean distances before the Gaussian kernel of P.
TSNE_METRICS = {
    "euclidean": "sqeuclidean",
    "sqeuclidean": "sqeuclidean",
    "cosine": "cosine",
    "manhattan": "manhattan",
}


def tsne_metric_in(metric: str) -> str:
    """The estimators' ``metric_in`` for scanpy's t-SNE ``metric``."""
    return TSNE_METRICS[check_option("metric", metric, TSNE_METRICS)]


def tsne_metric(metric_in: str) -> str | None:
    """scanpy's t-SNE ``metric`` for the estimators' ``metric_in`` (``None``: it has none)."""
    return {"sqeuclidean": "euclidean", "cosine": "cosine", "manhattan": "manhattan"}.get(metric_in)


#: ``sc.tl.umap``'s names.
UMAP_NAMES = ScanpyNames(
    {
        "maxiter": "max_iter",
        "alpha": "lr",
        "gamma": "repulsion_strength",
        "negative_sample_rate": "n_negatives",
        "init_pos": "init",
    }
)

#: ``sc.tl.tsne``'s names, used by every function of the t-SNE family.
TSNE_NAMES = ScanpyNames(
    {
        "early_exaggeration": "early_exaggeration_coeff",
        "learning_rate": "lr",
        "metric": "metric_in",
    },
    converters={"metric": tsne_metric_in},
    inverses={"metric": tsne_metric},
)

#: ``tl.pacmap``'s names: scanpy has no PaCMAP, so only ``metric`` takes scanpy's name and
#: meaning (as in ``sc.tl.tsne``; PaCMAP's pairs are the same for 'euclidean' and
#: 'sqeuclidean').
PACMAP_NAMES = ScanpyNames(
    {"metric": "metric_in"},
    converters={"metric": tsne_metric_in},
    inverses={"metric": tsne_metric},
)
