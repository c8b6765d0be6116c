"""Where rlhf_gym keeps assets it prepares once per machine (the converted SmolLM2 policy, the
reassembled MPNet encoder), and the file modes of what it writes (the user's umask)."""

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


def current_umask() -> int:
    """The process umask, read without changing it: ``os.umask`` can only be read by setting it,
    which briefly leaves other threads (the leaderboard server's) creating files with umask 0."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the only portable way to read it
    os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> Path:
    """Give ``path`` (a file, or a folder and everything under it) the mode a plain ``open``
    would have: 0666/0777 minus the umask. ``tempfile.mkstemp``/``mkdtemp`` and the safetensors
    writer (``save_file``, ``save_pretrained``) create files 0600, which other users, a web
    server or a shared results folder then cannot read."""
    path = Path(path)
    mask = current_umask()
    items = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in items:
        if item.is_symlink():
            continue
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)
    return path
