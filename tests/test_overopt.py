"""overopt: Gao et al.'s fit on synthetic data with known alpha/beta, the measured KL against the
exact KL of one-token responses, and the whole command on a tiny PPO run (cpu-tiny preset, the
committed tiny policy, a registered task whose reward and judge are real metrics)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_gym.overopt import fit_gao, gao_curve, overopt, read_run
from rlhf_gym.rewards.base import MetricReward

TINY_POLICY = Path(__file__).resolve().parents[1] / "baselines" / "sft" / "summarization"


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory):
    from rlhf_gym.tasks import register_jsonl_task

    path = tmp_path_factory.mktemp("overopt") / "toy.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"Summarise: paper {i} studies parsing of long sentences with a new model.",
             "references": [f"Paper {i} proposes a parser for long sentences."],
             "split": "validation" if i < 6 else "train"} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return register_jsonl_task("OverOptToy", path, kind="summarization",
                               reward=lambda: MetricReward("chrf"), judge=lambda: MetricReward("rougeL"))


def test_fit_recovers_known_alpha_and_beta():
    d = np.array([0.3, 0.8, 1.5, 2.2, 3.0, 4.1])
    alpha, beta = 1.3, 0.45
    fit = fit_gao(d, gao_curve(d, alpha, beta))
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-10) and fit["beta"] == pytest.approx(beta, abs=1e-10)
    assert fit["r2"] == pytest.approx(1.0) and fit["rmse"] < 1e-10
    peak = np.exp(alpha / beta - 1)  # dR/dd = alpha - beta log d - beta = 0
    assert fit["peak_sqrt_kl"] == pytest.approx(peak) and fit["peak_kl"] == pytest.approx(peak ** 2)
    assert fit["peak_gain"] == pytest.approx(float(gao_curve(peak, alpha, beta)))
    noisy = gao_curve(d, alpha, beta) + np.random.default_rng(0).normal(0, 0.01, d.size)
    fit = fit_gao(np.append(d, 0.0), np.append(noisy, 0.0))  # the start (d = 0) carries no information
    assert fit["n_points"] == d.size
    assert fit["alpha"] == pytest.approx(alpha, abs=0.05) and fit["beta"] == pytest.approx(beta, abs=0.05)
    rising = fit_gao(d, gao_curve(d, 0.5, -0.1))  # still rising: no peak
    assert "peak_kl" not in rising and rising["beta"] == pytest.approx(-0.1)
    assert gao_curve(0.0, alpha, beta) == 0.0
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        fit_gao([0.0, 1.0], [0.0, 0.3])


def _run_dir(root: Path, env_id: str, snapshots: dict[int, torch.nn.Module], **config) -> Path:
    """A run directory laid out as `train ppo` writes it, with the given policies as snapshots."""
    from rlhf_gym.policy import load_policy, save_policy

    _, tok, meta = load_policy(TINY_POLICY)
    for iteration, model in snapshots.items():
        save_policy(model, tok, meta, root / "snapshots" / f"iter_{iteration:05d}")
    cfg = {"env_id": env_id, "policy": str(TINY_POLICY), "algo": "ppo", "reward": "builtin", "safety_coef": 0.0,
           "temperature": 1.0, "max_new_tokens": None, **config}
    (root / "ppo_config.json").write_text(json.dumps(cfg))
    return root


def test_measured_kl_matches_the_exact_kl_of_one_token_responses(toy_task, tmp_path):
    """With one-token responses the exact KL(pi || pi_0) is a sum over the vocabulary at the last
    prompt position; the sampled estimate must agree within its own error."""
    from rlhf_gym.policy import encode_prompts, load_policy

    start, tok, meta = load_policy(TINY_POLICY)
    moved = load_policy(TINY_POLICY)[0]
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in moved.parameters():
            p.add_(0.015 * torch.randn(p.shape, generator=g))
    run = _run_dir(tmp_path / "run", toy_task.env_id, {3: moved}, max_new_tokens=1, temperature=0.8)
    report = overopt(run, limit=3, samples=64, plot=False, show_progress=False)
    row = report["rows"][1]
    assert row["iteration"] == 3 and report["rows"][0]["kl"] == 0.0

    exact = []
    for ex in toy_task.examples("validation")[:3]:
        ids = torch.tensor([encode_prompts(tok, [ex.prompt], meta)[0]])
        with torch.no_grad():
            logp = torch.log_softmax(moved(ids).logits[0, -1] / 0.8, -1)
            logq = torch.log_softmax(start(ids).logits[0, -1] / 0.8, -1)
        exact.append(float((logp.exp() * (logp - logq)).sum()))
    exact_kl = float(np.mean(exact))
    assert exact_kl > 0.05  # the perturbation moved the policy measurably
    assert abs(row["kl"] - exact_kl) < 4 * row["kl_se"] + 1e-3, (row["kl"], row["kl_se"], exact_kl)
    assert row["kl_k3"] == pytest.approx(exact_kl, abs=4 * row["kl_k3_se"] + 1e-3)


def test_overopt_on_a_tiny_ppo_run(toy_task, tmp_path):
    from rlhf_gym.cli import main
    from rlhf_gym.ppo.config import make_config
    from rlhf_gym.ppo.trainer import train

    run = tmp_path / "run"
    train(make_config("cpu-tiny", env_id=toy_task.env_id, policy=str(TINY_POLICY), out=str(run), iterations=2,
                      batch_size=4, mini_batch_size=4, ppo_epochs=1, lr=1e-3, snapshot_every=1, save_every=100,
                      progress=False, plot=False))
    _, policies, train_kl = read_run(run)
    assert [i for i, _ in policies] == [0, 1, 2]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert train_kl[1] == logged[1]["kl"]  # snapshot iter 1 generated the rollout of iteration 2

    report = overopt(run, limit=4, plot=True, show_progress=False)
    assert (run / "overopt.json").exists()
    assert json.loads((run / "overopt.json").read_text())["rows"] == json.loads(json.dumps(report["rows"]))
    rows = report["rows"]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[0]["kl"] == 0.0 and all(np.isfinite(r["kl"]) for r in rows)
    assert rows[1]["train_kl"] == logged[1]["kl"] and rows[2]["train_kl"] is None
    examples = toy_task.examples("validation")[:4]
    for r in rows:  # proxy and gold recomputed from the stored responses with the metrics themselves
        texts = r["sample"]["texts"]
        assert len(texts) == 4
        prompts, refs = [ex.prompt for ex in examples], [list(ex.references) for ex in examples]
        assert r["sample"]["proxy_mean"] == pytest.approx(float(np.mean(MetricReward("chrf")(prompts, texts, refs))))
        assert r["sample"]["gold_mean"] == pytest.approx(float(np.mean(MetricReward("rougeL")(prompts, texts, refs))))
        assert r["sample"]["gold_gain"] == pytest.approx(r["sample"]["gold_mean"] - rows[0]["sample"]["gold_mean"])
        if r["iteration"]:  # paired by prompt: the SE of the per-prompt differences from the start
            diff = np.subtract(r["sample"]["gold_scores"], rows[0]["sample"]["gold_scores"])
            assert r["sample"]["gold_gain_se"] == pytest.approx(diff.std(ddof=1) / 2)
    assert set(report["fits"]["sample"]) == {"proxy", "gold"}
    if importlib.util.find_spec("matplotlib"):
        assert (run / "overopt.png").stat().st_size > 1000

    # a rerun with the same settings reuses every measurement (the weights are not even read);
    # per-response scores missing from an older report are recomputed from its stored texts
    (run / "snapshots" / "iter_00001" / "model.safetensors").unlink()
    stored = json.loads((run / "overopt.json").read_text())
    for r in stored["rows"]:
        del r["sample"]["gold_scores"], r["sample"]["proxy_scores"]
    (run / "overopt.json").write_text(json.dumps(stored))
    again = overopt(run, limit=4, plot=False, show_progress=False)
    assert [r["sample"]["texts"] for r in again["rows"]] == [r["sample"]["texts"] for r in rows]
    assert [x for r in again["rows"] for x in r["sample"]["gold_scores"]] == pytest.approx(
        [x for r in rows for x in r["sample"]["gold_scores"]])
    assert main(["overopt", str(run), "--limit", "4", "--no-plot"]) == 0
    with pytest.raises(ValueError, match="--overwrite"):
        overopt(run, limit=3, plot=False, show_progress=False)
    with pytest.raises(ValueError, match="kl='measured'"):
        overopt(run, decoding="greedy", plot=False)
    with pytest.raises(FileNotFoundError, match="ppo_config.json"):
        overopt(tmp_path / "nothing")
