"""The burst benchmark end to end, as a (slow) test: the built-in envs of all three tasks with
their real reward models and gold judge, a server subprocess per backend, 20 concurrent distinct
submissions and a tampered one, then kill -9 mid-scoring and a restart. Behaviour is asserted
here; the timings are the benchmark's to record (benchmarks/leaderboard_burst.json), not to
assert on a shared machine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'rlhf-gym[server]'")
pytest.importorskip("httpx")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "leaderboard_burst.py"


@pytest.mark.slow
def test_burst_of_20_full_suite_submissions_and_kill_9_on_both_backends(tmp_path):
    from rlhf_gym.leaderboard.pgserver import unavailable_reason

    spec = importlib.util.spec_from_file_location("leaderboard_burst", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "burst.json"
    backends = "sqlite" + ("" if unavailable_reason() else ",postgres")
    bench.main(["--limit", "3", "--systems", "20", "--backends", backends, "--lease-s", "5", "--out", str(out)])
    report = json.loads(out.read_text())
    assert len(report["envs"]) == 3
    for name, b in report["backends"].items():
        burst = b["burst"]
        assert burst["post_http_codes"] == [202], name
        assert burst["verified"] == 20 and burst["tampered_status"] == "mismatch", (name, burst)
        assert burst["leaderboard_get"]["errors"] == 0
        assert b["stored"]["submissions"] == b["stored"]["distinct"] == b["stored"]["expected"] == 22
        assert b["stored"]["audit_creates"] == 22
        restart = b["restart"]
        assert restart["server_exit_code"] == -9 and restart["being_scored_when_killed"] == 1, (name, restart)
        assert restart["statuses"] == ["verified"] * 3 and restart["rows_each"] == [1, 1, 1], (name, restart)
        assert restart["attempts_of_killed_job"] == [2]
        assert b["stored_final"]["submissions"] == b["stored_final"]["expected"]
