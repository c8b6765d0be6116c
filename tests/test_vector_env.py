"""TextVectorEnv against gymnasium's own SyncVectorEnv over TextGenerationEnv (SAME_STEP autoreset),
and gymnasium.make_vec for every registered id."""

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import rlhf_gym.envs  # noqa: F401
from rlhf_gym.envs import TextVectorEnv
from rlhf_gym.rewards.base import CallableReward

ALL_IDS = [k for k in gym.registry if k.startswith("rlhf_gym/") and "Test" not in k]
TEXT_IDS = ["rlhf_gym/Dialogue-v0", "rlhf_gym/Summarization-v0"]
SAFETY_COEF = 0.5


def length_reward(prompt, response):
    return float(len(response))


def expected_reward(response: str) -> float:
    """length_reward minus the blocklist's safety penalty, computed here by hand."""
    return len(response) - SAFETY_COEF * bool(re.search(r"\bshit\b", response))


def make_pair(env_id: str, num_envs: int = 3, **kwargs):
    kwargs = {"reward_model": length_reward, "safety_coef": SAFETY_COEF, "safety_check": "blocklist",
              "render_mode": "ansi", **kwargs}
    ours = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    assert isinstance(ours, TextVectorEnv) and isinstance(sync, SyncVectorEnv)
    return ours, sync


def assert_info_equal(ours: dict, sync: dict, path: str = "info"):
    """Same keys in the same order, same masks, same dtypes and values, recursively."""
    assert list(ours) == list(sync), path
    for key in sync:
        a, b = ours[key], sync[key]
        if isinstance(b, dict):
            assert isinstance(a, dict), f"{path}[{key!r}]"
            assert_info_equal(a, b, f"{path}[{key!r}]")
            continue
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), f"{path}[{key!r}]"
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{path}[{key!r}]: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert a.tolist() == b.tolist(), f"{path}[{key!r}]"


def responses_for(step: int, num_envs: int) -> list[str]:
    out = [f"reply {step}.{slot} " + "x" * (3 * slot + step) for slot in range(num_envs)]
    out[step % num_envs] = "oh shit, sorry"  # one unsafe reply per step: a safety_penalty component
    return out


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_vector_env_matches_sync_vector_env_step_by_step(env_id):
    ours, sync = make_pair(env_id)
    assert ours.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert ours.render_mode == sync.render_mode == "ansi"
    assert ours.single_observation_space == sync.single_observation_space
    assert ours.single_action_space == sync.single_action_space

    obs, info = ours.reset(seed=5)
    sync_obs, sync_info = sync.reset(seed=5)
    assert obs == sync_obs and isinstance(obs, tuple)
    assert_info_equal(info, sync_info)
    assert ours.render() == sync.render() == obs
    # the reset info the trainer reads
    examples = ours.unwrapped.examples
    assert [examples[i].id for i in info["index"]] == list(info["example_id"])
    assert info["references"].dtype == object and all(isinstance(r, list) for r in info["references"])

    seen = set(info["example_id"])
    for step in range(3):
        actions = responses_for(step, ours.num_envs)
        next_obs, rewards, terminated, truncated, step_info = ours.step(actions)
        s_obs, s_rewards, s_terminated, s_truncated, s_info = sync.step(tuple(actions))
        assert next_obs == s_obs
        assert rewards.dtype == s_rewards.dtype == np.float64
        assert rewards.tolist() == s_rewards.tolist() == [expected_reward(a) for a in actions]
        assert terminated.tolist() == s_terminated.tolist() == [True] * ours.num_envs
        assert truncated.tolist() == s_truncated.tolist() == [False] * ours.num_envs
        assert_info_equal(step_info, s_info)
        assert ours.render() == sync.render()

        # final_obs/final_info describe the prompts just answered; the rest the next episodes
        assert list(step_info["final_obs"]) == [p + " " + a for p, a in zip(obs, actions)]
        final = step_info["final_info"]
        assert step_info["_final_obs"].all() and step_info["_final_info"].all()
        assert list(final["example_id"]) == list(info["example_id"])
        assert list(final["response"]) == actions
        for name in ("score", "unsafe", "safety_penalty", "response", "index"):
            assert final[f"_{name}"].all(), name
        assert final["score"].tolist() == [float(len(a)) for a in actions]
        assert final["safety_penalty"].tolist() == [-SAFETY_COEF * bool(re.search(r"\bshit\b", a)) for a in actions]
        assert list(step_info["example_id"]) == [examples[i].id for i in step_info["index"]]
        assert next_obs == tuple(examples[i].prompt for i in step_info["index"])
        obs, info = next_obs, step_info
        seen |= set(info["example_id"])
    assert len(seen) > ours.num_envs  # the autoresets drew new prompts


@pytest.mark.parametrize("env_id", TEXT_IDS)
def test_rewards_equal_the_single_envs_for_the_same_example_and_response(env_id):
    venv = TextVectorEnv(env_id, num_envs=2, reward_model=length_reward, safety_coef=SAFETY_COEF,
                         safety_check="blocklist")
    env = gym.make(env_id, reward_model=length_reward, safety_coef=SAFETY_COEF, safety_check="blocklist")
    _, info = venv.reset(options={"indices": [7, 2]})
    assert info["index"].tolist() == [7, 2]
    actions = ["that is fine", "oh shit no"]
    _, rewards, _, _, step_info = venv.step(actions)
    for slot, (index, action) in enumerate(zip([7, 2], actions)):
        obs, single_info = env.reset(options={"index": index})
        final_obs, reward, terminated, truncated, single_step = env.step(action)
        assert rewards[slot] == reward == expected_reward(action)
        assert step_info["final_obs"][slot] == final_obs == obs + " " + action
        assert {k: step_info["final_info"][k][slot] for k in single_step} == single_step


def test_options_and_reset_mask_match_sync_vector_env():
    ours, sync = make_pair("rlhf_gym/Summarization-v0")
    ours.reset(seed=0)
    sync.reset(seed=0)
    # a partial reset: only slot 1, with its own seed; the other slots keep their prompts
    before = ours.render()
    obs, info = ours.reset(seed=[None, 9, None], options={"reset_mask": np.array([False, True, False])})
    s_obs, s_info = sync.reset(seed=[None, 9, None], options={"reset_mask": np.array([False, True, False])})
    assert obs == s_obs and obs[0] == before[0] and obs[2] == before[2]
    assert_info_equal(info, s_info)
    assert info["_example_id"].tolist() == [False, True, False]
    # a single-env option goes to every slot, as SyncVectorEnv passes it to each sub-env
    obs, info = ours.reset(options={"index": 4})
    s_obs, s_info = sync.reset(options={"index": 4})
    assert obs == s_obs and len(set(obs)) == 1
    assert_info_equal(info, s_info)
    # then both go on in step with each other
    actions = responses_for(0, 3)
    out, s_out = ours.step(actions), sync.step(tuple(actions))
    assert out[0] == s_out[0] and out[1].tolist() == s_out[1].tolist()
    assert_info_equal(out[4], s_out[4])


def test_per_slot_options_and_clear_errors():
    venv = TextVectorEnv("rlhf_gym/Translation-v0", num_envs=2, reward_model=length_reward)
    with pytest.raises(RuntimeError, match="call reset"):
        venv.step(["a", "b"])
    obs, info = venv.reset(options={"example_ids": ["Gen.1.3", "Gen.1.1"]})
    assert list(info["example_id"]) == ["Gen.1.3", "Gen.1.1"]
    assert [venv.examples[i].prompt for i in info["index"]] == list(obs)
    with pytest.raises(ValueError, match="out of range"):
        venv.reset(options={"indices": [0, 10**9]})
    with pytest.raises(ValueError, match="options name 1 prompts for 2 slots"):
        venv.reset(options={"indices": [0]})
    with pytest.raises(ValueError, match="length must match num_envs=2"):
        venv.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.array([False, False])})
    with pytest.raises(ValueError, match="render_mode must be one of"):
        TextVectorEnv("rlhf_gym/Translation-v0", num_envs=2, reward_model=length_reward, render_mode="human")
    with pytest.raises(ValueError, match="vectorization_mode='sync'"):
        gym.make_vec("rlhf_gym/Dialogue-v0", num_envs=2, vectorization_mode="vector_entry_point",
                     reward_model=length_reward, multi_turn=True)


def test_batched_reward_is_called_once_per_step():
    calls = []

    def batched(prompts, responses, references):
        calls.append(len(responses))
        return [float(len(r)) for r in responses]

    venv = gym.make_vec("rlhf_gym/Dialogue-v0", num_envs=4, reward_model=CallableReward(batched, batched=True))
    assert isinstance(venv, TextVectorEnv)  # the default vectorization mode for single-turn ids
    venv.reset(seed=0)
    venv.step(["a", "bb", "ccc", ""])
    assert calls == [4]


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_make_vec_with_render_mode_for_every_id(env_id):
    venv = gym.make_vec(env_id, num_envs=2, render_mode="ansi", reward_model=length_reward)
    token = "Token" in env_id
    expected_class = SyncVectorEnv if token or "MultiTurn" in env_id or "Memory" in env_id else TextVectorEnv
    assert type(venv) is expected_class and venv.render_mode == "ansi"
    obs, info = venv.reset(seed=0)
    frames = venv.render()
    assert isinstance(frames, tuple) and len(frames) == 2 and all(isinstance(f, str) for f in frames)
    prompts = info["prompt"] if token else obs
    assert all(p in f for p, f in zip(prompts, frames))
    if token:
        actions = np.array([100, 200])
        obs, rewards, terminated, truncated, _ = venv.step(actions)
        assert obs["input_ids"].shape == (2, venv.single_observation_space["input_ids"].shape[0])
        assert obs["input_ids"][:, -1].tolist() == [100, 200]
    else:
        obs, rewards, terminated, truncated, _ = venv.step(("hello there", "hi"))
        assert len(obs) == 2 and all(isinstance(o, str) for o in obs)
    assert rewards.shape == (2,) and not truncated.any()
    assert len(venv.render()) == 2
    venv.close()


@pytest.mark.parametrize("env_id", [i for i in ALL_IDS if "Token" in i])
@pytest.mark.parametrize("mode", ["sync", None])
def test_make_vec_token_ids_run_to_the_end_of_an_episode(env_id, mode):
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, reward_model=length_reward, max_new_tokens=3,
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    assert isinstance(venv, SyncVectorEnv)
    eos = venv.get_attr("eos_id")[0]
    venv.reset(seed=1)
    # slot 0 ends with EOS on step 2; slot 1 reaches max_new_tokens on step 3
    plan = [[300, 300], [eos, 300], [300, 300]]
    for step, actions in enumerate(plan):
        _, rewards, terminated, truncated, info = venv.step(np.array(actions))
        assert not truncated.any()
        if step == 1:
            assert terminated.tolist() == [True, False]
            assert info["_final_info"].tolist() == [True, False] and info["final_info"]["eos"][0]
            assert rewards[0] == len(info["final_info"]["response"][0]) and rewards[1] == 0.0
        if step == 2:
            assert terminated.tolist() == [False, True]  # the env's token limit ends the task's episode
            assert info["final_info"]["_eos"].tolist() == [False, True] and not info["final_info"]["eos"][1]
            assert rewards[1] == len(info["final_info"]["response"][1]) > 0
    venv.close()


@pytest.mark.parametrize("mode", ["sync", None])
def test_make_vec_multi_turn_runs_whole_conversations(mode):
    venv = gym.make_vec("rlhf_gym/Dialogue-MultiTurn-v0", num_envs=2, vectorization_mode=mode,
                        reward_model=length_reward, render_mode="ansi",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})
    assert isinstance(venv, SyncVectorEnv)
    obs, info = venv.reset(seed=3)
    assert info["_turn"].all()
    ended = 0
    for step in range(3):  # max_turns=3: every conversation ends within 3 agent turns
        actions = (f"my reply {step}a", f"my reply {step}b")
        next_obs, rewards, terminated, truncated, info = venv.step(actions)
        assert rewards.tolist() == [float(len(a)) for a in actions] and not truncated.any()
        # gymnasium adds final_obs/final_info (and their masks) only on steps where some slot ended
        assert ("final_obs" in info) == terminated.any()
        for slot in range(2):
            if terminated[slot]:
                ended += 1
                assert info["_final_obs"][slot] and info["final_obs"][slot] == obs[slot] + " " + actions[slot]
                assert info["final_info"]["response"][slot] == actions[slot]
            else:
                assert "final_obs" not in info or not info["_final_obs"][slot]
                assert actions[slot] in next_obs[slot]  # the conversation goes on with the reply in it
        obs = next_obs
    assert ended >= 2
    assert all(isinstance(f, str) and f for f in venv.render())
    venv.close()
