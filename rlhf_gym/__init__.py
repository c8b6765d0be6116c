"""rlhf-gym: Gymnasium environments and a benchmark suite for RLHF on text generation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlhf-gym")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# Importing the package registers the rlhf_gym/... ids with gymnasium (gymnasium 1.x has no
# plugin entry points); `gymnasium.make("rlhf_gym:rlhf_gym/Dialogue-v0")` imports it for you.
from rlhf_gym import envs as _envs  # noqa: E402,F401
