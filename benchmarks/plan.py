"""Which runs a benchmark makes, and whether a run fits its time and memory budget."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.runners import TOOLS

METHODS = ("umap", "tsne", "infotsne", "largevis", "pacmap", "densmap")
#: What ``--methods`` / ``--peers`` default to (PaCMAP, densMAP and the pacmap package are
#: run when named).
DEFAULT_METHODS = ("umap", "tsne", "infotsne", "largevis")
BACKENDS = ("torch", "faiss", "keops")
PEERS = ("umap-learn", "opentsne", "scanpy", "torchdr", "pacmap")
DEFAULT_PEERS = ("umap-learn", "opentsne", "scanpy", "torchdr")
DISPLAY = {
    "ours": "torchdr-sc",
    "ours-tl": "torchdr-sc tl.",
    "umap-learn": "umap-learn",
    "opentsne": "openTSNE",
    "scanpy": "scanpy",
    "torchdr": "TorchDR",
    "pacmap": "pacmap",
}
METHOD_NAMES = {
    "umap": "UMAP",
    "tsne": "TSNE",
    "infotsne": "InfoTSNE",
    "largevis": "LargeVis",
    "pacmap": "PaCMAP",
    "densmap": "densMAP",
}
# Shared by every tool, so that the methods are compared at equal settings.
HYPERPARAMS = {"n_neighbors": 15, "min_dist": 0.1, "perplexity": 30.0}
TORCHDR_PYTHON = Path(__file__).resolve().parent / ".venv-torchdr" / "bin" / "python"
#: The scanpy peer's environment (see setup_scanpy_venv.sh); our own interpreter when absent.
SCANPY_PYTHON = Path(__file__).resolve().parent / ".venv-scanpy" / "bin" / "python"


@dataclass(frozen=True)
class Config:
    """One method of one tool with one kNN backend on one device.

    Attributes
    ----------
    tool : str
        A key of :data:`benchmarks.runners.TOOLS`.
    method : str
        One of :data:`METHODS`.
    backend : str or None
        kNN backend (our ``backend`` or TorchDR's), None where the tool has no choice.
    device : str
        ``'cpu'`` or ``'cuda'``.
    """

    tool: str
    method: str
    backend: str | None = None
    device: str = "cpu"

    @property
    def label(self) -> str:
        """Display name, e.g. ``'torchdr-sc UMAP [faiss, cpu]'``."""
        if self.tool == "ours-tl":
            name = f"{DISPLAY[self.tool]}{self.method}"
        else:
            name = f"{DISPLAY[self.tool]} {METHOD_NAMES[self.method]}"
        if self.tool in ("ours", "ours-tl", "torchdr"):
            name += f" [{self.backend or 'torch'}, {self.device}]"
        return name


def available(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it).

    Parameters
    ----------
    module : str
        Top-level module name.

    Returns
    -------
    bool
    """
    return importlib.util.find_spec(module) is not None


def our_backends(requested: list[str]) -> list[str]:
    """Keep the requested backends whose package is installed.

    Parameters
    ----------
    requested : list of str
        Backend names (``'auto'`` is kept as is).

    Returns
    -------
    list of str
    """
    needs = {"faiss": "faiss", "keops": "pykeops"}
    return [b for b in requested if b not in needs or available(needs[b])]


def configs(
    methods: list[str],
    backends: list[str],
    devices: list[str],
    peers: list[str],
    torchdr_backends: list[str],
    anndata_layer: bool = False,
) -> list[Config]:
    """All runs to make on each dataset: ours first, then the peers.

    Parameters
    ----------
    methods : list of str
        Methods, from :data:`METHODS`.
    backends : list of str
        Our kNN backends.
    devices : list of str
        Devices for ours and TorchDR.
    peers : list of str
        Peers, from :data:`PEERS`.
    torchdr_backends : list of str
        TorchDR backends (``'faiss'``, ``'keops'``, ``'torch'`` for its dense default).
    anndata_layer : bool, default=False
        Also run ``tdr.tl.<method>`` on an AnnData (first backend only).

    Returns
    -------
    list of Config
    """
    ours = our_backends(backends)
    out = [Config("ours", m, b, dev) for m in methods for dev in devices for b in ours]
    if anndata_layer and ours:
        out += [Config("ours-tl", m, ours[0], dev) for m in methods for dev in devices]
    for peer in peers:
        provided = TOOLS[peer][1]
        for m in methods:
            if m not in provided:
                continue
            if peer == "torchdr":
                out += [Config(peer, m, b, dev) for dev in devices for b in torchdr_backends]
            else:
                out.append(Config(peer, m))
    return out


@dataclass
class Budget:
    """Decides from the runs at smaller n whether a run at a larger n fits its budget.

    Attributes
    ----------
    seconds : float
        Wall-time budget of one run (its process, start to end).
    memory_mb : float
        Resident-memory budget of one run.
    history : dict
        ``{label: [(n, fit_s, overhead_s, peak_rss_mb, status), ...]}``, in the order run.
    """

    seconds: float
    memory_mb: float
    history: dict = field(default_factory=dict)

    def record(
        self, label: str, n: int, fit_s: float, wall_s: float, rss_mb: float, status: str
    ) -> None:
        """Remember the outcome of a run.

        Parameters
        ----------
        label : str
            Config label.
        n : int
            Dataset size.
        fit_s : float
            Wall time of the fit.
        wall_s : float
            Wall time of the whole process; the difference with ``fit_s`` (start-up, imports,
            JIT warm-up) is taken as a constant overhead.
        rss_mb : float
            Peak resident memory.
        status : str
            The run's status.
        """
        overhead = max(0.0, wall_s - fit_s)
        self.history.setdefault(label, []).append((n, fit_s, overhead, rss_mb, status))

    @staticmethod
    def _extrapolate(points: list[tuple[int, float]], n: int, min_slope: float) -> float:
        """Extrapolate ``value(n)`` on a log-log line through the last two points."""
        (n1, v1) = points[-1]
        slope = min_slope
        if len(points) >= 2:
            n0, v0 = points[-2]
            if n1 > n0 and v0 > 0 and v1 > 0:
                slope = max(min_slope, math.log(v1 / v0) / math.log(n1 / n0))
        return v1 * (n / n1) ** slope

    def check(
        self, label: str, n: int, seconds: float | None = None
    ) -> tuple[str | None, float | None]:
        """Whether to skip ``label`` at size ``n``.

        Parameters
        ----------
        label : str
            Config label.
        n : int
            Dataset size.
        seconds : float, optional
            This run's wall-time budget (default :attr:`seconds`).

        Returns
        -------
        reason : str or None
            ``'skipped (budget)'`` or ``'skipped (memory)'`` with the estimate, None to run it.
        estimate : float or None
            Estimated wall seconds.
        """
        seconds = self.seconds if seconds is None else seconds
        past = [h for h in self.history.get(label, []) if h[0] < n]
        if not past:
            return None, None
        if any(h[4].startswith("skipped (budget)") for h in past):
            return f"skipped (budget): over {seconds:.0f} s at a smaller n", None
        if any(h[4].startswith("skipped (memory)") for h in past):
            return "skipped (memory): over budget at a smaller n", None
        ok = [h for h in past if h[4] == "ok"]
        if not ok:
            return None, None
        est_s = ok[-1][2] + self._extrapolate([(h[0], h[1]) for h in ok], n, min_slope=1.0)
        if est_s > seconds:
            return f"skipped (budget): est. {est_s:.0f} s > {seconds:.0f} s", est_s
        # Memory: a fixed base (interpreter, libraries) plus a part linear in n, so the line
        # through the last two sizes; one size alone says nothing about the slope.
        est_mb = 0.0
        if len(ok) >= 2 and ok[-1][0] > ok[-2][0]:
            (n0, m0), (n1, m1) = (ok[-2][0], ok[-2][3]), (ok[-1][0], ok[-1][3])
            est_mb = m1 + max(0.0, (m1 - m0) / (n1 - n0)) * (n - n1)
        if est_mb > self.memory_mb:
            return f"skipped (memory): est. {est_mb / 1024:.1f} GB", est_s
        return None, est_s
