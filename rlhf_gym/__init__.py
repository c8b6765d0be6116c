"""rlhf-gym: Gymnasium environments and a benchmark suite for RLHF on text generation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlhf-gym")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
