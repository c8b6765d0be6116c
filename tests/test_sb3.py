"""stable-baselines3 PPO/A2C on the token-level envs through LMActorCriticPolicy (tiny GPT-2s)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import A2C, PPO  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402

import rlhf_gym.envs  # noqa: E402,F401  (registers the env ids)
from rlhf_gym.rewards.base import CallableReward  # noqa: E402
from rlhf_gym.sb3 import LMActorCriticPolicy, tiny_gpt2_config  # noqa: E402

ENV_ID = "rlhf_gym/Dialogue-Token-v0"


def vowel_fraction(prompt: str, response: str) -> float:
    """Share of the response's characters that are lower-case vowels: about 0.25 for random
    tokens, up to 1.0 for a policy that emits only tokens like "e", "a", "ou"."""
    return sum(c in "aeiou" for c in response) / max(len(response), 1)


def make_env(max_prompt_tokens: int = 16, max_new_tokens: int = 4):
    return gym.make(ENV_ID, reward_model=CallableReward(vowel_fraction), max_prompt_tokens=max_prompt_tokens,
                    max_new_tokens=max_new_tokens)


def tiny_config(**overrides):
    return tiny_gpt2_config(**{"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 128, **overrides})


@pytest.fixture(autouse=True)
def _few_threads():
    # Small matrices: extra threads only contend with other jobs on the machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(policy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


@pytest.mark.parametrize("algo", [PPO, A2C])
def test_algorithms_learn_on_the_unwrapped_token_env(algo):
    env = make_env()
    kwargs = {"n_steps": 64, "batch_size": 32, "n_epochs": 2} if algo is PPO else {"n_steps": 8}
    model = algo(LMActorCriticPolicy, env, policy_kwargs={"model": tiny_config()}, learning_rate=1e-3, seed=0, **kwargs)
    before = _params(model.policy)
    model.learn(128)
    after = _params(model.policy)
    assert model.num_timesteps >= 128
    assert all(torch.isfinite(p).all() for p in after.values())
    # Both the LM and the value head must receive gradients through SB3's losses.
    assert not torch.equal(before["lm.transformer.wte.weight"], after["lm.transformer.wte.weight"])
    assert not torch.equal(before["value_net.weight"], after["value_net.weight"])
    # One optimiser over every parameter; nothing of SB3's default MLP heads is left in it.
    optimised = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.policy.parameters()}
    assert not any(name.startswith(("mlp_extractor", "action_net")) for name in after)


def _observations(env, n: int, seed: int = 0):
    """Observations from different prompts and response lengths (so different left padding)."""
    obs_list, rng = [], np.random.default_rng(seed)
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        for _ in range(int(rng.integers(0, 3))):
            obs, *_ = env.step(int(rng.integers(2, env.action_space.n)))
        obs_list.append(obs)
    return {key: np.stack([o[key] for o in obs_list]) for key in obs_list[0]}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_evaluate_actions_log_probs_are_the_lms_next_token_log_softmax(temperature):
    env = make_env(max_prompt_tokens=48, max_new_tokens=4)
    model = PPO(LMActorCriticPolicy, env, policy_kwargs={"model": tiny_config(), "temperature": temperature}, seed=1)
    policy = model.policy
    batch = _observations(env, 6)
    assert len({int(m.sum()) for m in batch["attention_mask"]}) > 1, "want rows with different padding"
    actions = torch.as_tensor(np.random.default_rng(0).integers(0, env.action_space.n, 6))
    obs_t, _ = policy.obs_to_tensor(batch)
    with torch.no_grad():
        values, log_prob, entropy = policy.evaluate_actions(obs_t, actions)
        for row in range(6):
            # Independently: the unpadded sequence alone, default positions, full logits.
            ids = torch.as_tensor(batch["input_ids"][row][batch["attention_mask"][row] == 1]).unsqueeze(0)
            logits = policy.lm(input_ids=ids).logits[0, -1] / temperature
            expected = torch.log_softmax(logits.double(), -1)
            assert log_prob[row].item() == pytest.approx(expected[actions[row]].item(), abs=1e-4)
            assert entropy[row].item() == pytest.approx(-(expected.exp() * expected).sum().item(), abs=1e-3)
    assert values.shape == (6, 1)


def test_vocab_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"predicts 100 tokens .*Discrete\(8192\)"):
        PPO(LMActorCriticPolicy, make_env(), policy_kwargs={"model": tiny_config(vocab_size=100)})


def test_too_short_context_is_a_clear_error():
    with pytest.raises(ValueError, match="only 8 positions"):
        PPO(LMActorCriticPolicy, make_env(), policy_kwargs={"model": tiny_config(n_positions=8)})


def test_dropout_is_off_even_in_training_mode():
    from transformers import GPT2LMHeadModel

    lm = GPT2LMHeadModel(tiny_config(resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5))
    env = make_env()
    model = PPO(LMActorCriticPolicy, env, policy_kwargs={"model": lm})
    assert model.policy.lm is lm
    model.policy.set_training_mode(True)
    obs_t, _ = model.policy.obs_to_tensor(_observations(env, 4))
    actions = torch.zeros(4, dtype=torch.long)
    first = model.policy.evaluate_actions(obs_t, actions)[1]
    second = model.policy.evaluate_actions(obs_t, actions)[1]
    assert torch.equal(first, second)


def test_predict_and_save_load_round_trip(tmp_path):
    env = make_env()
    model = PPO(LMActorCriticPolicy, env, policy_kwargs={"model": tiny_config(), "temperature": 0.5},
                n_steps=32, batch_size=16, n_epochs=1, seed=0)
    model.learn(32)
    batch = _observations(env, 5, seed=3)
    actions, _ = model.predict(batch, deterministic=True)
    greedy = model.policy.next_token_logits(batch).argmax(-1).numpy()
    np.testing.assert_array_equal(actions, greedy)
    single, _ = model.predict({k: v[0] for k, v in batch.items()}, deterministic=True)
    assert int(single) == int(greedy[0]) and env.action_space.contains(int(single))

    model.save(tmp_path / "ppo_lm")
    loaded = PPO.load(tmp_path / "ppo_lm", env=make_env())
    assert isinstance(loaded.policy, LMActorCriticPolicy) and loaded.policy.temperature == 0.5
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    torch.testing.assert_close(loaded.policy.next_token_logits(batch), model.policy.next_token_logits(batch))
    np.testing.assert_array_equal(loaded.predict(batch, deterministic=True)[0], actions)
    loaded.learn(32)  # the restored optimiser state must fit the restored parameters


def _mean_reward(model, episodes: int) -> float:
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=episodes, deterministic=False)
    return float(mean)


def test_ppo_raises_a_rule_based_reward():
    env = make_env()
    model = PPO(LMActorCriticPolicy, env, policy_kwargs={"model": tiny_config()}, learning_rate=3e-2,
                n_steps=512, batch_size=128, n_epochs=4, gamma=1.0, gae_lambda=1.0, seed=0)
    before = _mean_reward(model, 100)
    model.learn(4096)
    after = _mean_reward(model, 100)
    # An untrained (near-uniform) policy scores about 0.25; the bar is far outside its noise
    # (std of a 100-episode mean is about 0.02).
    assert before < 0.32
    assert after > before + 0.2, (before, after)


def test_model_given_as_a_local_path(tmp_path):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_config()).save_pretrained(tmp_path / "lm")
    env = make_env()
    model = A2C(LMActorCriticPolicy, env, policy_kwargs={"model": str(tmp_path / "lm")}, n_steps=4, seed=0)
    reference = GPT2LMHeadModel.from_pretrained(tmp_path / "lm")
    assert all(torch.equal(p, reference.state_dict()[k]) for k, p in model.policy.lm.state_dict().items())
    model.learn(8)
    with pytest.raises(FileNotFoundError, match="cannot load causal LM"):
        PPO(LMActorCriticPolicy, env, policy_kwargs={"model": str(tmp_path / "missing")})
