import os

import pytest

# Everything must run without the model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests neither read nor fill the user's persistent embedding cache: a warm one would hide encoder
# work the tests count (tests/test_encoding.py gives the cache its own folders).
os.environ.setdefault("RLHF_GYM_EMBED_CACHE", "off")

# Import the CLI (and with it torch/transformers, which bind logging handlers to the sys.stderr of
# the moment) once here, not first inside a test whose captured stream pytest closes afterwards.
import rlhf_gym.cli  # noqa: E402,F401
import rlhf_gym.loop  # noqa: E402,F401
import transformers  # noqa: E402,F401


@pytest.fixture
def tiny_task(tmp_path):
    """A task registered from a JSONL file, with a chrF reward and a ROUGE-L judge (both real
    metrics), so evaluation tests need no encoder."""
    import json

    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    rows = [
        {"id": f"q{i}", "prompt": f"Say something about number {i}.", "references": [f"The number {i} is a fine number."],
         "split": "test" if i < 6 else "train"}
        for i in range(12)
    ]
    path = tmp_path / "tiny.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return register_jsonl_task("TinyTest", path, kind="summarization",
                               reward=lambda: MetricReward("chrf"), judge=lambda: MetricReward("rougeL"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Real uvicorn on 127.0.0.1 in a background thread (the leaderboard's and serve-env's tests)."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", log_config=None,
                                                   limit_concurrency=1000))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server():
    return LiveServer


@pytest.fixture
def free_tcp_port() -> int:
    return free_port()
