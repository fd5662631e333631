"""From a ``tl`` call to an estimator: scanpy's names, extra keywords, suggestions.

The ``tl`` functions speak scanpy (``maxiter``, ``alpha``, ``init_pos``, ``learning_rate``
...), the estimators speak TorchDR (``max_iter``, ``lr``, ``init``, ...). A
:class:`ScanpyNames` declares, once per ``tl`` function, which of its parameters is which
estimator parameter. Every meaning then has one name in ``tl``: an estimator name that has a
scanpy counterpart is refused in ``**kwargs`` with the scanpy name suggested, and any other
unknown keyword gets the closest valid names.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._validation import format_options
from . import log

#: Names other tools use for a meaning that ``tl`` names the scanpy way (umap-learn,
#: openTSNE, scikit-learn); used only to suggest the right name in an error.
OTHER_TOOLS_NAMES: dict[str, tuple[str, ...]] = {
    "n_epochs": ("maxiter",),
    "n_iter": ("maxiter",),
    "learning_rate": ("alpha", "learning_rate"),
    "repulsion_strength": ("gamma",),
    "init": ("init_pos",),
    "exaggeration": ("early_exaggeration",),
    "early_exaggeration_coeff": ("early_exaggeration",),
    "lr": ("alpha", "learning_rate"),
    "metric_in": ("metric",),
    "n_negatives": ("negative_sample_rate",),
    "max_iter": ("maxiter",),
    "seed": ("random_state",),
    "n_threads": ("n_jobs",),
    "num_threads": ("n_jobs",),
}


@dataclass(frozen=True)
class ScanpyNames:
    """The parameters of a ``tl`` function that are estimator parameters under another name.

    Attributes
    ----------
    to_estimator
        ``tl`` (scanpy) name -> estimator (TorchDR) name, e.g. ``{'maxiter': 'max_iter'}``.
    converters
        ``tl`` name -> function turning its value into the estimator's, where the meanings
        of the values differ (t-SNE's ``metric='euclidean'`` is ``metric_in='sqeuclidean'``).
    inverses
        ``tl`` name -> the converter's inverse (``None`` where a value has no ``tl`` form).
    """

    to_estimator: Mapping[str, str] = field(default_factory=dict)
    converters: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    inverses: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    def scanpy_values(self, estimator_params: Mapping[str, Any]) -> dict[str, Any]:
        """The estimator's values under the ``tl`` names (what ``uns`` records).

        A value a converter cannot give back (its inverse returns ``None``) is left out:
        the record then keeps it under the estimator's name.
        """
        out = {}
        for name, est_name in self.to_estimator.items():
            value = estimator_params.get(est_name)
            inverse = self.inverses.get(name)
            value = value if inverse is None or value is None else inverse(value)
            if value is not None:
                out[name] = value
        return out

    def estimator_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` keyed by ``tl`` names, as estimator parameters (renamed, converted).

        ``None`` values are left out (the estimator's default applies).
        """
        out = {}
        for name, value in values.items():
            if value is None:
                continue
            convert = self.converters.get(name)
            out[self.to_estimator.get(name, name)] = value if convert is None else convert(value)
        return out

    def scanpy_name(self, estimator_name: str) -> str | None:
        """The ``tl`` name of an estimator parameter, or ``None`` if it has none."""
        for tl_name, est_name in self.to_estimator.items():
            if est_name == estimator_name:
                return tl_name
        return None

    def estimator_names(self) -> set[str]:
        """Estimator parameters that ``tl`` takes under their scanpy name."""
        return set(self.to_estimator.values())


def tl_parameters(tl_function: Callable[..., Any]) -> set[str]:
    """The named parameters of a ``tl`` function (``adata`` and ``**kwargs`` excluded)."""
    return set(inspect.signature(tl_function).parameters) - {"adata", "kwargs"}


def _estimator_parameters(estimator_cls: type) -> set[str]:
    return set(estimator_cls().get_params())


def suggestions(name: str, valid: set[str]) -> list[str]:
    """The valid names closest to ``name``: known aliases first, then by spelling."""
    known = [n for n in OTHER_TOOLS_NAMES.get(name, ()) if n in valid]
    close = difflib.get_close_matches(name, sorted(valid), n=3, cutoff=0.6)
    return list(dict.fromkeys(known + close))


def _unknown_keyword(
    tl_function: Callable[..., Any], name: str, valid: set[str], hint: str = ""
) -> TypeError:
    guesses = suggestions(name, valid)
    guess = f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else "."
    msg = f"tl.{tl_function.__name__}() got an unexpected keyword argument {name!r}{guess}"
    if hint:
        msg += f" {hint}"
    return TypeError(msg)


def estimator_options(
    tl_function: Callable[..., Any],
    estimator_cls: type,
    kwargs: dict[str, Any],
    names: ScanpyNames | None = None,
) -> dict[str, Any]:
    """The estimator parameters a ``tl`` call passes on through ``**kwargs``, checked.

    Parameters
    ----------
    tl_function
        The ``tl`` function called (its name and its own parameters make the message).
    estimator_cls
        The estimator it builds.
    kwargs
        The extra keyword arguments of the call.
    names
        The ``tl`` function's scanpy names of estimator parameters: those estimator names
        are refused here (one name per meaning).

    Returns
    -------
    ``kwargs`` with ``verbose`` defaulting to scanpy's rule (``sc.settings.verbosity > 3``).

    Raises
    ------
    TypeError
        A keyword that is neither a parameter of the ``tl`` function nor one of the
        estimator's that ``tl`` passes on, with the closest valid names suggested.
    """
    names = names or ScanpyNames()
    own = tl_parameters(tl_function)
    renamed = names.estimator_names()
    passed_on = _estimator_parameters(estimator_cls) - own - renamed
    valid = own | passed_on
    for name in sorted(kwargs):
        if name in renamed:
            scanpy = names.scanpy_name(name)
            hint = (
                f"tl.{tl_function.__name__} takes scanpy's name {scanpy!r} for the "
                f"{estimator_cls.__name__} estimator's {name!r}."
            )
            raise _unknown_keyword(tl_function, name, {scanpy} if scanpy else valid, hint)
        if name not in passed_on:
            raise _unknown_keyword(tl_function, name, valid)
    options = dict(kwargs)
    options.setdefault("verbose", log.verbosity() >= log.DEBUG)
    return options


def build_estimator(
    tl_function: Callable[..., Any],
    estimator_cls: type,
    params: dict[str, Any],
    names: ScanpyNames | None = None,
) -> Any:
    """The estimator ``tl_function`` builds when given the estimator parameters ``params``.

    For callers that hold estimator parameters rather than a ``tl`` call (the atlas job's
    streamed path): the ``tl`` function's own defaults (e.g. ``tl.umap``'s ``min_dist``)
    and ``init_pos='spectral'``, through ``names``, by default the ``scanpy_names``
    attribute of the ``tl`` function) apply to what ``params`` does not set, and the
    parameters are validated.

    Raises
    ------
    TypeError
        A key of ``params`` that is not a parameter of the estimator.
    ValueError
        An invalid value (the message names the parameter).
    """
    valid = _estimator_parameters(estimator_cls)
    unknown = sorted(set(params) - valid)
    if unknown:
        msg = (
            f"{unknown[0]!r} is not a parameter of {estimator_cls.__name__} "
            f"(valid: {format_options(valid)})."
        )
        raise TypeError(msg)
    names = names or getattr(tl_function, "scanpy_names", None) or ScanpyNames()
    tl_defaults = {
        name: p.default
        for name, p in inspect.signature(tl_function).parameters.items()
        if p.default is not inspect.Parameter.empty and p.default is not None
    }
    defaults = {
        name: value for name, value in names.estimator_params(tl_defaults).items() if name in valid
    }
    est = estimator_cls(**{**defaults, **params})
    est.validate()
    return est
