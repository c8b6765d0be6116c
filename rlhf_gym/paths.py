"""Where rlhf_gym keeps assets it prepares once per machine (the converted SmolLM2 policy, the
reassembled MPNet encoder)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$RLHF_GYM_CACHE``, else ``$XDG_CACHE_HOME/rlhf_gym``, else ``~/.cache/rlhf_gym``."""
    if os.environ.get("RLHF_GYM_CACHE"):
        return Path(os.environ["RLHF_GYM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "rlhf_gym"
    return Path.home() / ".cache" / "rlhf_gym"
