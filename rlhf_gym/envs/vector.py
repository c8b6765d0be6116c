"""A batched vector env: ``num_envs`` prompts per step, all scored with one reward-model call.

Episodes are one response long, so the env resets finished slots in the same step
(``AutoresetMode.SAME_STEP``): ``step`` returns the rewards for the prompts just answered and the
next prompts at once. ``info["final_info"]`` holds what the answered prompts were.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_gym.envs.text_env import MAX_PROMPT_CHARS, check_response, make_env_reward, text_space


class TextVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, task: str = "rlhf_gym/Dialogue-v0", num_envs: int = 8, split: str = "train",
                 reward_model=None, max_episode_steps: int | None = None, **penalties):
        from rlhf_gym.tasks import get_task

        del max_episode_steps  # every episode is one response long; accepted for gymnasium.make_vec

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task = get_task(task) if isinstance(task, str) else task
        self.num_envs, self.split = int(num_envs), split
        self.examples = self.task.examples(split)
        self._index = {ex.id: i for i, ex in enumerate(self.examples)}
        self.reward_fn = make_env_reward(self.task, reward_model, **penalties)
        self.single_observation_space = text_space(MAX_PROMPT_CHARS, min_length=1)
        self.single_action_space = text_space(self.task.max_response_chars)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
        self._current: list[int] = []

    def _draw(self) -> list[int]:
        return [int(rng.integers(len(self.examples))) for rng in self._rngs]

    def _obs_info(self, indices: Sequence[int]):
        exs = [self.examples[i] for i in indices]
        # Filled slot by slot: np.array() on equal-length lists would build a 2-D array of str.
        references = np.empty(len(exs), dtype=object)
        for slot, ex in enumerate(exs):
            references[slot] = list(ex.references)
        info = {
            "example_id": np.array([ex.id for ex in exs], dtype=object),
            "references": references,
            "source": np.array([ex.source for ex in exs], dtype=object),
        }
        return tuple(ex.prompt for ex in exs), info

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None):
        """``seed`` seeds slot i with seed + i (gymnasium's convention). ``options`` may name the
        prompts: ``{"example_ids": [...]}`` or ``{"indices": [...]}`` (one per slot)."""
        if seed is not None:
            seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        options = options or {}
        if "example_ids" in options:
            missing = [i for i in options["example_ids"] if i not in self._index]
            if missing:
                raise ValueError(f"example ids not in split {self.split!r}: {missing[:5]}")
            indices = [self._index[i] for i in options["example_ids"]]
        elif "indices" in options:
            indices = [int(i) for i in options["indices"]]
        else:
            indices = self._draw()
        if len(indices) != self.num_envs:
            raise ValueError(f"options name {len(indices)} prompts for {self.num_envs} slots")
        self._current = indices
        return self._obs_info(indices)

    def step(self, actions: Sequence[str]):
        if not self._current:
            raise RuntimeError("call reset() before step()")
        if isinstance(actions, str) or len(actions) != self.num_envs:
            raise ValueError(f"step() needs a sequence of {self.num_envs} response strings")
        responses = [check_response(a, self.task.max_response_chars) for a in actions]
        answered = [self.examples[i] for i in self._current]
        total, components = self.reward_fn([ex.prompt for ex in answered], responses,
                                           [ex.references for ex in answered])
        final_obs, final_info = self._obs_info(self._current)
        final_info.update({name: values for name, values in components.items()})
        final_info["response"] = np.array(responses, dtype=object)
        self._current = self._draw()
        obs, info = self._obs_info(self._current)
        info["final_obs"] = np.array(final_obs, dtype=object)
        info["final_info"] = final_info
        info["_final_obs"] = info["_final_info"] = np.ones(self.num_envs, dtype=bool)
        done = np.ones(self.num_envs, dtype=bool)
        return obs, total.astype(np.float64), done, np.zeros(self.num_envs, dtype=bool), info
