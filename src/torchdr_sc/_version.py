"""The installed version of torchdr-sc (read from the package metadata, no heavy import)."""

from __future__ import annotations


def package_version() -> str:
    """Installed version of torchdr-sc (``'0.0.0'`` when running from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchdr-sc")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"
