"""RLOO through the shared trainer, and best-of-n selection."""

import pytest
import torch

from rlhf_gym.best_of_n import BestOfNAgent
from rlhf_gym.policy import load_policy
from rlhf_gym.ppo.config import make_config
from rlhf_gym.ppo.trainer import train
from rlhf_gym.rewards.base import CallableReward
from test_ppo import REWARD, make_policy, non_ascii_fraction, toy_env_id


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return make_policy(tmp_path_factory.mktemp("policy") / "tiny")


def rloo_cfg(policy_dir, out, **kw):
    base = dict(algo="rloo", env_id=toy_env_id(), policy=str(policy_dir), out=str(out), iterations=2, batch_size=8, mini_batch_size=4,
                rloo_k=4, lr=1e-2, progress=False, plot=False, save_every=1)
    return make_config("cpu-tiny", **{**base, **kw})


def test_rloo_runs_without_value_model(policy_dir, tmp_path):
    before = {k: v.clone() for k, v in load_policy(policy_dir)[0].state_dict().items()}
    history = train(rloo_cfg(policy_dir, tmp_path / "r"), reward_model=REWARD)
    assert history[0]["kl"] == 0.0
    assert all(torch.isfinite(torch.tensor(h["policy_loss"])) for h in history)
    assert not (tmp_path / "r" / "value_model.pt").exists()
    after = load_policy(tmp_path / "r")[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_rloo_config_errors():
    with pytest.raises(ValueError, match="rloo_k"):
        make_config("cpu-tiny", algo="rloo", batch_size=8, mini_batch_size=4, rloo_k=3)


def test_best_of_n_returns_the_reward_argmax(policy_dir):
    calls = []

    def recording(prompt, response):
        score = non_ascii_fraction(prompt, response)
        calls.append((response, score))
        return score

    agent = BestOfNAgent(policy_dir, n=4, reward_model=CallableReward(recording))
    prompts = ["Write item 1:", "Write item 2:"]
    chosen = agent.act(prompts, [{"references": ["x"]}] * 2)
    assert len(calls) == 8 and len(chosen) == 2
    for j, text in enumerate(chosen):
        group = calls[4 * j:4 * j + 4]
        best = max(range(4), key=lambda i: group[i][1])
        assert text == group[best][0]
    with pytest.raises(ValueError, match="n >= 1"):
        BestOfNAgent(policy_dir, n=0, reward_model=REWARD)


@pytest.mark.slow
def test_rloo_learns_toy_task(tmp_path):
    policy = make_policy(tmp_path / "p")
    history = train(rloo_cfg(policy, tmp_path / "learn", iterations=15, batch_size=32, mini_batch_size=16,
                             kl_coef=0.01, missing_eos_penalty=0.0, save_every=100),
                    reward_model=REWARD)
    start = sum(h["reward_mean"] for h in history[:2]) / 2
    end = sum(h["reward_mean"] for h in history[-3:]) / 3
    assert start < 0.25 and end >= 0.3, (start, end)


def test_rloo_advantages_are_whitened_per_sequence():
    """Two prompts x 2 samples; sequence lengths 1 and 6 tokens must not change the advantage a
    sequence gets (token-level whitening after broadcasting would)."""
    from rlhf_gym.rloo import rloo_advantages

    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])
    raw = rloo_advantages(rewards, 2)
    assert torch.allclose(raw, torch.tensor([1.0, -1.0, 2.0, -2.0]))  # r_i - mean of the others
    whitened = rloo_advantages(rewards, 2, whiten=True)
    expected = (raw - raw.mean()) / raw.std()
    assert torch.allclose(whitened, expected, atol=1e-6)
    assert abs(float(whitened.mean())) < 1e-6 and abs(float(whitened.std()) - 1) < 1e-5


def test_best_of_n_scores_candidates_by_stepping_the_env(policy_dir, tmp_path, monkeypatch):
    """Under bench, best-of-n picks by the env's reward (its reward spec + safety penalty, stepped
    through the vector env), not by a reward model called on the side."""
    from rlhf_gym.evaluation import EnvScorer
    from rlhf_gym.tasks import get_task

    log = tmp_path / "calls.jsonl"
    reward_file = tmp_path / "reward.py"
    reward_file.write_text(
        "import json, os\n"
        "def score(prompts, responses, references):\n"
        "    out = [float(sum(c in 'aeiou' for c in r)) for r in responses]\n"
        "    with open(os.environ['BON_LOG'], 'a') as fh:\n"
        "        for p, r, s in zip(prompts, responses, out):\n"
        "            fh.write(json.dumps([p, r, s]) + '\\n')\n"
        "    return out\n")
    monkeypatch.setenv("BON_LOG", str(log))
    task = get_task(toy_env_id())
    scorer = EnvScorer(task, "train", reward=f"{reward_file}:score", safety_coef=0.0)
    agent = BestOfNAgent(policy_dir, n=3, reward="builtin")
    agent.bind_env(scorer)
    observations, infos = scorer.observe([0, 1])
    chosen = agent.act(observations, infos)
    calls = [tuple(x) for x in map(__import__("json").loads, log.read_text().splitlines())]
    assert len(calls) == 6  # every candidate went through the env's reward, once
    for j, text in enumerate(chosen):
        group = calls[3 * j:3 * j + 3]
        assert all(p == observations[j] for p, _, _ in group)  # the env's observation is the prompt
        assert text == max(group, key=lambda c: c[2])[1]
