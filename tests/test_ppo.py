"""PPO trainer end to end on a tiny random GPT-2 with the project tokenizer (CPU, seconds)."""

import functools
import json
import tempfile
from pathlib import Path

import pytest
import torch

from rlhf_gym.data import Example
from rlhf_gym.policy import PolicyMeta, build_tiny_policy, load_policy, save_policy
from rlhf_gym.ppo.config import PPOConfig, make_config
from rlhf_gym.ppo.rollout import logprobs
from rlhf_gym.ppo.trainer import TIMING_KEYS, train
from rlhf_gym.rewards.base import CallableReward
from rlhf_gym.tasks import register_jsonl_task
from rlhf_gym.tokenizer import load_tokenizer


def non_ascii_fraction(prompt, response):
    """Toy rule-based reward: share of non-ASCII characters (about 0.15 for a random policy)."""
    return sum(ord(c) > 127 for c in response) / max(1, len(response))


REWARD = CallableReward(non_ascii_fraction)
EXAMPLES = [Example(id=str(i), prompt=f"Write item {i}:", references=("x",)) for i in range(40)]


@functools.lru_cache(maxsize=1)
def toy_env_id() -> str:
    """EXAMPLES as a task registered from a JSONL file: the trainers roll out through its env."""
    path = Path(tempfile.mkdtemp(prefix="rlhf_gym_toy_")) / "items.jsonl"
    path.write_text("".join(json.dumps({**ex.to_json(), "split": "train"}) + "\n" for ex in EXAMPLES))
    return register_jsonl_task("ToyItems", path, kind="translation").env_id


def make_policy(path, init_range=0.5, seed=0):
    """A 1-layer GPT-2 whose larger init makes the random policy peaked enough to learn fast."""
    tok = load_tokenizer()
    model = build_tiny_policy(tok, n_layer=1, n_embd=32, n_head=2, n_positions=128, seed=seed)
    model.config.initializer_range = init_range
    torch.manual_seed(seed)
    model.apply(model._init_weights)
    meta = PolicyMeta(env_id="rlhf_gym/Translation-v0", kind="translation", arch="causal",
                      max_prompt_len=24, max_new_tokens=8)
    return save_policy(model, tok, meta, path)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return make_policy(tmp_path_factory.mktemp("policy") / "tiny")


def cfg(policy_dir, out, **kw):
    base = dict(env_id=toy_env_id(), policy=str(policy_dir), out=str(out), iterations=2, batch_size=8, mini_batch_size=4,
                ppo_epochs=2, lr=1e-2, progress=False, plot=False, save_every=1, missing_eos_penalty=0.5)
    return make_config("cpu-tiny", **{**base, **kw})


def strip_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def test_ppo_runs_kl_zero_at_start_and_updates_parameters(policy_dir, tmp_path):
    before = {k: v.clone() for k, v in load_policy(policy_dir)[0].state_dict().items()}
    history = train(cfg(policy_dir, tmp_path / "run"), reward_model=REWARD)
    assert len(history) == 2
    # the first rollout comes from the unchanged policy, which IS the reference
    assert history[0]["kl"] == 0.0 and history[0]["kl_k3"] == 0.0
    for h in history:
        for key in ("policy_loss", "value_loss", "entropy", "reward_mean", "approxkl", "explained_variance"):
            assert torch.isfinite(torch.tensor(h[key])), key
    assert history[1]["kl"] != 0.0  # the policy moved away from the reference
    after = load_policy(tmp_path / "run")[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2]
    for key in ("reward_mean", "rlhf_reward", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "approxkl",
                "explained_variance", "response_length", "eos_fraction", "tokens_per_second", "samples_per_second"):
        assert key in json.loads(lines[0])
    assert (tmp_path / "run" / "samples.jsonl").exists()
    assert (tmp_path / "run" / "checkpoint" / "state.pt").exists()
    assert (tmp_path / "run" / "value_model.pt").exists()


def test_same_seed_same_metrics_and_resume_is_exact(policy_dir, tmp_path):
    full = train(cfg(policy_dir, tmp_path / "a", iterations=4), reward_model=REWARD)
    again = train(cfg(policy_dir, tmp_path / "b", iterations=4), reward_model=REWARD)
    assert strip_timing(full) == strip_timing(again)
    # "killed" after iteration 2, then resumed with the same command
    train(cfg(policy_dir, tmp_path / "c", iterations=2), reward_model=REWARD)
    with pytest.raises(ValueError, match="--resume"):  # never continue or overwrite a run silently
        train(cfg(policy_dir, tmp_path / "c", iterations=4), reward_model=REWARD)
    resumed = train(cfg(policy_dir, tmp_path / "c", iterations=4, resume=True), reward_model=REWARD)
    assert strip_timing(resumed) == strip_timing(full)
    logged = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert strip_timing(logged) == strip_timing(full)
    other_seed = train(cfg(policy_dir, tmp_path / "d", iterations=1, seed=1), reward_model=REWARD)
    assert strip_timing(other_seed)[0] != strip_timing(full)[0]


def test_resume_refuses_changed_settings(policy_dir, tmp_path):
    train(cfg(policy_dir, tmp_path / "r", iterations=1), reward_model=REWARD)
    with pytest.raises(ValueError, match="lr"):
        train(cfg(policy_dir, tmp_path / "r", iterations=2, lr=1e-3, resume=True), reward_model=REWARD)


def test_k3_adaptive_kl_and_grad_accumulation(policy_dir, tmp_path):
    history = train(cfg(policy_dir, tmp_path / "k3", kl_estimator="k3", adaptive_kl=True, target_kl=0.01,
                        kl_horizon=100, grad_accum_steps=2, whiten_rewards=True),
                    reward_model=REWARD)
    assert history[0]["kl_coef"] == 0.05
    assert history[1]["kl_coef"] != 0.05  # the adaptive controller reacted


def test_logprobs_match_generation_scores(policy_dir):
    """Left-padded recomputation reproduces the sampling distribution (temperature included)."""
    from transformers import GenerationConfig

    from rlhf_gym.policy import encode_prompts

    model, tok, meta = load_policy(policy_dir)
    prompts = ["a", "a much longer prompt than the first one"]
    ids = encode_prompts(tok, prompts, meta)
    q_len = max(map(len, ids))
    query = torch.tensor([[tok.pad_token_id] * (q_len - len(x)) + x for x in ids])
    qmask = (torch.arange(q_len)[None] >= torch.tensor([[q_len - len(x)] for x in ids])).long()
    torch.manual_seed(0)
    gen = model.generate(input_ids=query, attention_mask=qmask, generation_config=GenerationConfig(
        max_new_tokens=5, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id), output_scores=True, return_dict_in_generate=True)
    response = gen.sequences[:, q_len:]
    step_logp = torch.stack([torch.log_softmax(s, -1) for s in gen.scores], 1)
    expected = torch.gather(step_logp, 2, response.unsqueeze(-1)).squeeze(-1)
    got, _ = logprobs(model, query, qmask, response, torch.ones_like(response), temperature=0.7)
    assert torch.allclose(got, expected, atol=1e-4)


def test_bad_config_is_a_clear_error(policy_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of mini_batch_size"):
        PPOConfig(batch_size=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOConfig(kl_estimator="k9")
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("tpu")
    with pytest.raises((FileNotFoundError, ValueError), match="policy directory"):
        train(cfg(tmp_path / "nothing", tmp_path / "o"), reward_model=REWARD)


def test_ppo_learns_toy_task(tmp_path):
    """From a random policy, PPO must raise the non-ASCII share from ~0.15 to >= 0.3 (~5 s on
    2 idle cores, so it runs by default; the RLOO twin is marked slow)."""
    policy = make_policy(tmp_path / "p")
    history = train(cfg(policy, tmp_path / "learn", iterations=15, batch_size=32, mini_batch_size=16, kl_coef=0.01,
                        missing_eos_penalty=0.0, save_every=100), reward_model=REWARD)
    start = sum(h["reward_mean"] for h in history[:2]) / 2
    end = sum(h["reward_mean"] for h in history[-3:]) / 3
    assert start < 0.25, start
    assert end >= 0.3, (start, end)


def test_lora_shares_one_base_copy_and_saves_a_loadable_adapter(policy_dir, tmp_path):
    """LoRA: the reference is the adapter-disabled base and the critic a head on the policy's
    hidden states, so no second copy of the weights exists; the run saves only the adapter,
    which loads back (merged into its base) as a policy that differs from the base."""
    from rlhf_gym.ppo.trainer import PolicyParts

    config = cfg(policy_dir, tmp_path / "lora", lora_r=4, lora_alpha=8, iterations=2)
    model = load_policy(policy_dir)[0]
    n_base = sum(p.numel() for p in model.parameters())
    parts = PolicyParts(model, config, torch.device("cpu"), with_value=True)
    assert parts.ref is None and parts.value_model is None
    trainable = sum(p.numel() for p in parts.policy_params()) + sum(p.numel() for p in parts.value_params())
    assert trainable < 0.5 * n_base  # adapters + value head only

    history = train(config, reward_model=REWARD)
    assert history[0]["kl"] == 0.0 and history[1]["kl"] != 0.0
    assert history[0]["peak_memory_mb"] > 0
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    trained, _, meta = load_policy(tmp_path / "lora")
    assert meta.trained_by == "ppo" and meta.info["base_policy"] == str(policy_dir)
    base = load_policy(policy_dir)[0].state_dict()
    after = trained.state_dict()
    assert set(after) == set(base)
    assert any(not torch.equal(base[k], after[k]) for k in base)
