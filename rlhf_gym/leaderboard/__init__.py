"""Leaderboard: verified submissions, a small web server, static site builds and human
pairwise feedback.

Everything here recomputes metrics from submitted generations with the locally installed
environments and judge; submitted numbers are stored for comparison but never trusted.
Heavy web dependencies (fastapi, uvicorn, jinja2) are imported only by the modules that
serve or render pages.
"""

from __future__ import annotations

SERVER_EXTRA_HINT = "install the server extra: pip install 'rlhf-gym[server]'"


def require(module: str):
    """Import an optional dependency or fail with an actionable message."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"{module} is required for this feature; {SERVER_EXTRA_HINT}") from err
