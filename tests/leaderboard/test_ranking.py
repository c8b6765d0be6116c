"""The overall ranking uses the LC win rate against each task's baseline agent (comparable across
tasks), not the win rate against the references (which a reference-reading judge pins near 0)."""

from __future__ import annotations

import pytest

from rlhf_gym.leaderboard.render import markdown_board, rate_pct
from rlhf_gym.leaderboard.service import build_board, table_row
from rlhf_gym.winrate import combine_env_rates

ENVS = {"rlhf_gym/Dialogue-v1": "dialogue", "rlhf_gym/Translation-v1": "translation"}


def _metrics(win_vs_ref: float, lc_vs_base: float | None) -> dict:
    m = {"bleu": 10.0, "chrf": 30.0, "rougeL": 20.0, "reward_mean": 0.0, "length": {"mean_words": 12.0},
         "win_rate_vs_reference": {"mean": win_vs_ref, "ci_low": max(0, win_vs_ref - 0.05),
                                   "ci_high": min(1, win_vs_ref + 0.05), "n": 100}}
    if lc_vs_base is not None:
        m["lc_win_rate_vs_baseline"] = {"mean": lc_vs_base, "ci_low": lc_vs_base - 0.1, "ci_high": lc_vs_base + 0.1,
                                        "n": 100}
    return m


def _rows(sid: str, per_env: dict[str, tuple[float, float | None]]) -> list[dict]:
    return [table_row(sid, sid, "", "2026-11-26T00:00:00Z", env, ENVS[env], _metrics(*values), True)
            for env, values in per_env.items()]


def test_overall_ranks_by_lc_win_rate_vs_baseline_not_by_win_rate_vs_reference():
    dialogue, translation = "rlhf_gym/Dialogue-v1", "rlhf_gym/Translation-v1"
    rows = (_rows("copies-refs-on-dialogue", {dialogue: (0.9, 0.3), translation: (0.0, 0.4)})
            + _rows("better-everywhere", {dialogue: (0.1, 0.7), translation: (0.0, 0.8)})
            + _rows("old-results", {dialogue: (0.95, None), translation: (0.9, None)})
            + _rows("one-env", {dialogue: (0.5, 0.99)}))
    board = build_board(rows)
    order = [o["id"] for o in board["overall"]]
    # more envs first; then LC vs baseline; results without it (older scorer) rank last
    assert order == ["better-everywhere", "copies-refs-on-dialogue", "old-results", "one-env"]
    best = board["overall"][0]
    expected = combine_env_rates([{"mean": 0.7, "ci_low": 0.6, "ci_high": 0.8},
                                  {"mean": 0.8, "ci_low": 0.7, "ci_high": 0.9}])
    assert best["lc_vs_baseline"] == pytest.approx(0.75) == pytest.approx(expected["mean"])
    assert best["lc_vs_baseline_ci"] == pytest.approx([expected["ci_low"], expected["ci_high"]])
    assert board["overall"][2]["lc_vs_baseline"] is None
    # dialogue's own table is ranked by the same comparable quantity
    assert board["primary"]["rlhf_gym/Dialogue-v1"] == "lc_vs_baseline"
    assert [r["id"] for r in board["envs"]["rlhf_gym/Dialogue-v1"]][:2] == ["one-env", "better-everywhere"]
    md = markdown_board(board)
    assert "Overall (mean length-controlled win rate vs each task's baseline agent)" in md
    assert rate_pct(best["lc_vs_baseline"], *best["lc_vs_baseline_ci"]) in md


def test_rate_cells_never_print_the_mean_outside_the_interval():
    assert rate_pct(0.0009, 0.0, 0.0025) == "0.1 [0.0, 0.3]"
    assert rate_pct(0.00996, 0.0052, 0.0149) == "1.0 [0.5, 1.5]"
    assert rate_pct(None) == "–"
