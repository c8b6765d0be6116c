"""Length-controlled win rates, intervals that never collapse or exclude their mean, multi-seed
aggregates and the cross-task ranking score (rlhf_gym/winrate.py), checked against independent
computations: scikit-learn's logistic regression, Wilson's closed form, hand-built data whose
answer is known, and the metric judge of a tiny task."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rlhf_gym import metrics, winrate
from rlhf_gym.cli import main


def _simulate(rng, n, theta, beta, shift=0.0, spread=80.0):
    """Preferences drawn from the LC model itself, on length differences centred at ``shift``."""
    delta = rng.normal(shift, spread, n)
    x, _ = winrate.length_feature(delta)
    prefs = (rng.random(n) < 1.0 / (1.0 + np.exp(-(theta + beta * x)))).astype(float)
    return prefs, delta


def test_fit_equals_scikit_learn_logistic_regression_with_fractional_targets():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    prefs, delta = _simulate(rng, 300, -0.4, 1.5, shift=30.0)
    prefs[:30] = 0.5  # ties enter as half a win
    ours = winrate.fit_length_logistic(prefs, delta, ridge=0.0)
    x = np.tanh(delta / np.std(delta, ddof=1))
    # AlpacaEval's trick: each comparison twice, label 1 with weight p and label 0 with weight 1 - p
    model = sklearn.LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(
        np.r_[x, x][:, None], np.r_[np.ones_like(x), np.zeros_like(x)], sample_weight=np.r_[prefs, 1 - prefs])
    assert ours["theta"] == pytest.approx(model.intercept_[0], abs=1e-6)
    assert ours["beta"] == pytest.approx(model.coef_[0, 0], abs=1e-6)
    assert ours["lc"] == pytest.approx(1 / (1 + np.exp(-model.intercept_[0])), abs=1e-6)
    # the default ridge on the slope is scikit-learn's L2 penalty with C = 1 / ridge (its
    # intercept is not penalised, nor is theta here)
    penalised = sklearn.LogisticRegression(C=1 / winrate.LENGTH_RIDGE, tol=1e-12, max_iter=10_000).fit(
        np.r_[x, x][:, None], np.r_[np.ones_like(x), np.zeros_like(x)], sample_weight=np.r_[prefs, 1 - prefs])
    default = winrate.fit_length_logistic(prefs, delta)
    assert default["theta"] == pytest.approx(penalised.intercept_[0], abs=1e-6)
    assert default["beta"] == pytest.approx(penalised.coef_[0, 0], abs=1e-6)
    assert default["lc"] == pytest.approx(ours["lc"], abs=1e-3)  # an ordinary fit barely moves


def test_lc_interval_widens_when_length_cannot_be_told_from_quality():
    """An agent always 180-280 characters longer than its opponent: tanh(diff / sd) is close to 1
    everywhere, so the rate at zero difference is not identified. The fit keeps LC near the raw
    rate and the interval says how little the data tell."""
    rng = np.random.default_rng(4)
    delta = rng.uniform(180, 280, 200)
    prefs = (rng.random(200) < 0.7).astype(float)
    lc = winrate.lc_from_preferences(prefs, delta)
    raw_low, raw_high = metrics.preference_interval(prefs)
    assert lc["mean"] == pytest.approx(prefs.mean(), abs=0.05)
    assert lc["ci_high"] - lc["ci_low"] > 0.5 and raw_high - raw_low < 0.2


def test_padding_gains_under_the_raw_rate_but_not_under_lc():
    """A judge that only rewards length, two agents of equal quality: one as long as the baseline
    on average, one padded by 120 characters. The raw rate rewards the padder; LC does not."""
    rng = np.random.default_rng(2)
    honest = winrate.lc_from_preferences(*_simulate(rng, 300, 0.0, 2.0, shift=0.0, spread=60.0))
    padded = winrate.lc_from_preferences(*_simulate(rng, 300, 0.0, 2.0, shift=120.0, spread=60.0))
    raw_gain = padded["raw_mean"] - honest["raw_mean"]
    lc_gain = padded["mean"] - honest["mean"]
    assert raw_gain > 0.25, raw_gain
    assert abs(lc_gain) < 0.1 and abs(lc_gain) < raw_gain / 3, (lc_gain, raw_gain)
    for r in (honest, padded):
        assert r["ci_low"] <= 0.5 <= r["ci_high"] and r["ci_low"] <= r["mean"] <= r["ci_high"]


def test_without_length_differences_lc_is_the_raw_rate_and_its_interval_is_wilson():
    prefs = np.r_[np.ones(13), np.zeros(27), np.full(10, 0.5)]
    lc = winrate.lc_from_preferences(prefs, np.zeros(prefs.size))
    assert lc["mean"] == pytest.approx(prefs.mean(), abs=1e-9) and lc["beta"] == 0.0
    assert lc["score_ci"] == pytest.approx(list(metrics.wilson_interval(prefs.sum(), prefs.size)), abs=1e-7)


@pytest.mark.parametrize("wins, n", [(0, 1517), (1517, 1517), (0, 6), (1, 300)])
def test_rates_of_zero_or_one_get_a_non_degenerate_interval_containing_the_mean(wins, n):
    scores_a = np.r_[np.ones(wins), np.zeros(n - wins)]
    scores_b = np.full(n, 0.5)
    texts_a = ["x" * (10 + i % 7) for i in range(n)]
    texts_b = ["y" * (12 + i % 5) for i in range(n)]
    raw, lc = winrate.compare(scores_a, scores_b, texts_a, texts_b)
    for rate in (raw, lc):
        assert rate["ci_low"] <= rate["mean"] <= rate["ci_high"] and rate["ci_high"] - rate["ci_low"] > 0
    if wins == 0:
        assert raw["ci_high"] == pytest.approx(metrics.wilson_interval(0, n)[1]) and lc["ci_high"] > 0
    if wins == n:
        assert raw["ci_low"] == pytest.approx(metrics.wilson_interval(n, n)[0]) and lc["ci_low"] < 1


def test_printed_mean_is_never_outside_its_printed_interval():
    assert metrics.format_rate({"mean": 0.009, "ci_low": 0.0052, "ci_high": 0.0155}) == "0.009 [0.005, 0.016]"
    assert metrics.format_rate({"mean": 0.0, "ci_low": 0.0, "ci_high": 0.00253}) == "0.000 [0.000, 0.003]"
    assert metrics.format_rate({"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75}) == "0.500 [0.250, 0.750]"
    rng = np.random.default_rng(3)
    for _ in range(2000):
        low, mean, high = np.sort(rng.random(3) ** rng.integers(1, 6))
        for digits, percent in ((3, False), (2, False), (1, True)):
            text = metrics.format_rate({"mean": mean, "ci_low": low, "ci_high": high}, digits, percent)
            shown, lo, hi = map(float, re.findall(r"[-\d.]+", text))
            assert lo <= shown <= hi, text


def test_aggregate_over_seeds_resamples_seeds_as_well_as_prompts():
    n = 100
    prefs = np.stack([np.ones(n), np.zeros(n)])  # seed 0 always wins, seed 1 always loses
    agg = winrate.aggregate_rate(prefs)
    assert agg["mean"] == 0.5 and agg["n"] == n and agg["seeds"] == 2
    # two seeds that disagree completely: the interval must span most of [0, 1], far wider than
    # Wilson's on 200 pooled comparisons would be
    pooled = metrics.wilson_interval(100, 200)
    assert agg["ci_high"] - agg["ci_low"] > 0.9 > pooled[1] - pooled[0]
    # identical seeds: the aggregate is the single-seed rate, with Wilson at n prompts as a floor
    same = np.tile((np.arange(n) % 4 == 0).astype(float), (3, 1))
    agg = winrate.aggregate_rate(same)
    wilson = metrics.wilson_interval(25, n)
    assert agg["mean"] == 0.25 and agg["ci_low"] <= wilson[0] and agg["ci_high"] >= wilson[1]
    lc = winrate.aggregate_lc(same, np.tile(np.linspace(-50, 50, n), (3, 1)))
    assert lc["ci_low"] <= lc["mean"] <= lc["ci_high"] and lc["comparisons"] == 3 * n
    assert lc["mean"] == pytest.approx(winrate.fit_length_logistic(same[0], np.linspace(-50, 50, n))["lc"], abs=1e-6)


def test_seed_aggregate_vs_reference_uses_the_reference_free_judge_when_the_env_has_one():
    """The single-seed win rate against the reference comes from the reference-free judge
    (refjudge_* fields); the aggregate over seeds must use the same judge, not the gold one."""
    def block(wins_gold, wins_refjudge):
        gens = [{"id": str(i), "prediction": "p" * 10, "references": ["r" * (10 + i % 3)],
                 "judge_score": 1.0 if i < wins_gold else 0.0, "reference_judge_score": 0.5,
                 "refjudge_score": 1.0 if i < wins_refjudge else 0.0, "refjudge_reference_score": 0.5, "reward": 0.0,
                 "baseline_prediction": "b", "baseline_judge_score": 0.0}
                for i in range(20)]
        return {"metrics": {}, "generations": gens}

    agg = winrate.aggregate_seed_blocks([block(18, 4), block(18, 6)], [0, 1])
    assert agg["aggregate"]["win_rate_vs_reference"]["mean"] == pytest.approx(0.25)  # (4 + 6) / 40, not 0.9
    # without reference-free scores the gold judge's are the ones there are
    for b in (plain := [block(18, 4), block(18, 6)]):
        for g in b["generations"]:
            del g["refjudge_score"], g["refjudge_reference_score"]
    assert winrate.aggregate_seed_blocks(plain, [0, 1])["aggregate"]["win_rate_vs_reference"]["mean"] == 0.9


def test_combine_env_rates_mean_and_normal_interval():
    a = {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3}
    b = {"mean": 0.6, "ci_low": 0.4, "ci_high": 0.8}
    out = winrate.combine_env_rates([a, b])
    half = 1.959964 * np.sqrt((0.2 / 3.919928) ** 2 + (0.4 / 3.919928) ** 2) / 2
    assert out["mean"] == pytest.approx(0.4) and out["ci_high"] - out["mean"] == pytest.approx(half)
    assert winrate.combine_env_rates([a, None]) is None


def test_pad_agent_pads_the_reference_within_the_action_limit(tiny_task):
    from rlhf_gym.agents import FILLER_SENTENCES, make_agent
    from rlhf_gym.evaluation import generate

    examples = tiny_task.examples("test")
    padded = [r["prediction"] for r in generate(make_agent("pad", tiny_task), examples, show_progress=False)]
    for ex, text in zip(examples, padded):
        assert text.startswith(ex.references[0]) and len(ex.references[0]) < len(text) <= tiny_task.max_response_chars
        assert len(text) + len(FILLER_SENTENCES[-1]) + 1 > tiny_task.max_response_chars or \
            text.endswith(FILLER_SENTENCES[-1])  # filled as far as the limit allows
    lead_padded = generate(make_agent("pad:lead", tiny_task), examples[:1], show_progress=False)[0]["prediction"]
    assert lead_padded.startswith(examples[0].source.split(".")[0])


def test_score_predictions_reports_lc_and_baseline_rates_from_the_judge(tiny_task):
    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import generate, score_predictions

    examples = tiny_task.examples("test")
    preds = [{"id": ex.id, "prediction": f"The number {i} is a number, I think."} for i, ex in enumerate(examples)]
    block = score_predictions(tiny_task.env_id, preds)
    m = block["metrics"]
    # independent: the judge (ROUGE-L) on the lead agent's outputs, compared by hand
    judge = tiny_task.judge_model()
    lead = [r["prediction"] for r in generate(make_agent("lead", tiny_task), examples, show_progress=False)]
    refs = [list(ex.references) for ex in examples]
    ours = judge([ex.prompt for ex in examples], [p["prediction"] for p in preds], refs)
    theirs = judge([ex.prompt for ex in examples], lead, refs)
    expected = np.mean(np.where(ours > theirs, 1.0, np.where(ours < theirs, 0.0, 0.5)))
    assert block["baseline"]["spec"] == "lead" and m["win_rate_vs_baseline"]["mean"] == pytest.approx(expected)
    assert [g["baseline_prediction"] for g in block["generations"]] == lead
    for key in ("lc_win_rate_vs_reference", "lc_win_rate_vs_baseline"):
        lc = m[key]
        assert lc["n"] == 6 and lc["ci_low"] <= lc["mean"] <= lc["ci_high"] and lc["length_unit"] == "characters"
    assert m["lc_win_rate_vs_agent"] is None
    json.dumps(block, allow_nan=False)  # the leaderboard stores canonical JSON: no inf/nan


class CoinAgent:
    """A sampling agent: each response depends on its seed (numpy RNG)."""

    name = "coin"
    temperature = 1.0

    def __init__(self):
        self.seed = 0

    def act(self, observations, infos):
        rng = np.random.default_rng(self.seed)
        return [info["references"][0] if rng.random() < 0.5 else "No." for info in infos]


def test_bench_seeds_gives_per_seed_numbers_and_an_aggregate(tiny_task, tmp_path, capsys):
    from rlhf_gym.evaluation import print_results_table, run_bench

    out = tmp_path / "seeds.json"
    results = run_bench(f"{__file__}:CoinAgent", [tiny_task.env_id], seeds=[0, 1], out=out, show_progress=False)
    block = json.loads(out.read_text())["envs"][tiny_task.env_id]
    info = block["seeds"]
    assert info["seeds"] == [0, 1] and not info["deterministic"] and len(info["per_seed"]) == 2
    assert len({tuple(run["predictions"]) for run in info["per_seed"]}) == 2  # the seeds really differ
    assert [g["prediction"] for g in block["generations"]] == info["per_seed"][0]["predictions"]
    agg = info["aggregate"]
    per_seed = [run["metrics"]["win_rate_vs_reference"]["mean"] for run in info["per_seed"]]
    assert agg["win_rate_vs_reference"]["mean"] == pytest.approx(np.mean(per_seed))
    assert agg["win_rate_vs_reference"]["seeds"] == 2 and agg["lc_win_rate_vs_baseline"]["comparisons"] == 12
    assert results["overall"]["mean"] == pytest.approx(agg["lc_win_rate_vs_baseline"]["mean"])
    assert json.loads(out.read_text())["overall"] == results["overall"]
    assert not list(tmp_path.glob("seeds.json.seed*"))  # per-seed runs merged into OUT, then removed
    print_results_table(results)
    printed = capsys.readouterr().out
    assert "per seed and aggregate" in printed and "overall ranking score: LC win rate vs lead" in printed
    # a deterministic agent runs once and says so
    lead = run_bench("lead", [tiny_task.env_id], seeds=[0, 1, 2], show_progress=False)
    info = lead["envs"][tiny_task.env_id]["seeds"]
    assert info["deterministic"] and info["seeds"] == [0] and "one seed suffices" in info["note"]
    # the CLI parses --seeds and rejects a bad list with the problem named
    from rlhf_gym.cli import build_parser

    assert build_parser().parse_args(["bench", "--seeds", "0,1,2"]).seeds == [0, 1, 2]
    with pytest.raises(SystemExit):
        main(["bench", "--agent", "lead", "--envs", tiny_task.env_id, "--seeds", "0,x", "--out", str(out)])
    assert "comma-separated integers" in capsys.readouterr().err


def test_lc_warning_flags_rates_far_from_raw_as_alpacaeval_does():
    # AlpacaEval's examples: from 20% a move below 10% or above 40% is flagged; from 50%, below
    # 37.5% or above 62.5%
    for raw, ok, flagged in ((0.2, (0.11, 0.39), (0.09, 0.41)), (0.5, (0.38, 0.62), (0.37, 0.63))):
        assert not any(winrate.lc_warning({"mean": m, "raw_mean": raw}) for m in ok)
        assert all(winrate.lc_warning({"mean": m, "raw_mean": raw}) for m in flagged)
    lc = {"mean": 1.0, "raw_mean": 0.85, "ci_low": 0.993, "ci_high": 1.0}
    assert winrate.format_lc(lc).endswith(" !") and not winrate.format_lc({**lc, "mean": 0.9}).endswith("!")
    results = {"envs": {"rlhf_gym/Dialogue-v1": {"metrics": {"lc_win_rate_vs_baseline": lc}}}}
    assert "! LC far from the raw rate on Dialogue-v1" in winrate.overall_line(results)


def test_results_table_shows_the_baseline_columns_once():
    from rlhf_gym.evaluation import results_table

    rate = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    metrics = {"bleu": 1.0, "chrf": 2.0, "rouge1": 3.0, "rouge2": 4.0, "rougeL": 5.0, "rougeLsum": 6.0,
               "reward_mean": 0.1, "win_rate_vs_reference": rate, "win_rate_vs_agent": rate,
               "win_rate_vs_baseline": rate, "length": {"mean_words": 7.0}}
    results = {"agent": {"spec": "retrieval"}, "envs": {"rlhf_gym/X-v0": {"n": 10, "metrics": metrics}}}
    for vs, expected in (("lead", ["win vs lead"]), ("smollm2", ["win vs smollm2", "win vs lead"]), (None, ["win vs lead"])):
        table = results_table({**results, **({"vs_agent": {"spec": vs}} if vs else {})})
        headers = [str(c.header) for c in table.columns]
        assert [h for h in headers if h.startswith("win vs ") and h != "win vs ref"] == expected
        assert len(headers) == len(set(headers))
