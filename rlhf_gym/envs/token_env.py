"""Token-level text environment: the agent emits one token id per step.

- observation: ``{"input_ids", "attention_mask"}``, fixed length ``max_prompt_tokens +
  max_new_tokens``, left-padded so the newest token is always last (what a causal LM reads).
- action: a token id, ``Discrete(vocab_size)``.
- reward: 0 on every step but the last, which gets the reward-model score of the decoded
  response (minus ``missing_eos_penalty`` when it has no EOS); with ``kl_coef`` every step also
  gets ``-kl_coef * KL`` for its token, and with ``safety_coef`` the last step a safety penalty.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlhf_gym.envs.text_env import make_env_reward, pick_example


def truncate_prompt_ids(ids: list[int], max_tokens: int, head_tokens: int = 32) -> list[int]:
    """Fit a prompt into ``max_tokens`` by cutting its middle: the head holds the instruction
    (task, topic, title), the tail what the reply must follow."""
    if len(ids) <= max_tokens:
        return ids
    head = min(head_tokens, max_tokens // 4)
    return ids[:head] + ids[len(ids) - (max_tokens - head):]


class TokenGenerationEnv(gym.Env[dict, int]):
    """``gymnasium.make("rlhf_gym/Dialogue-Token-v0")`` and friends: one token per step.

    Episode end: the response is over when the agent emits EOS *or* reaches the env's
    ``max_new_tokens``; both are the task's own end of the episode, so both return
    ``terminated=True, truncated=False`` with the final score (an algorithm must not bootstrap a
    value on top of it). Reaching the limit without EOS costs ``missing_eos_penalty``; the last
    step's ``info["eos"]`` says which way it ended. ``truncated`` is never set by this env: it is
    left to external time limits (``gymnasium.wrappers.TimeLimit`` with fewer steps than
    ``max_new_tokens``), which cut an episode before its end and carry no score.

    ``reset`` info: ``example_id``, ``index`` (position in the split), ``references``, ``prompt``;
    ``options={"example_id": ...}`` or ``{"index": i}`` picks the example.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 30}

    def __init__(self, task: str = "rlhf_gym/Dialogue-Token-v0", split: str = "train", tokenizer=None,
                 max_prompt_tokens: int = 192, max_new_tokens: int | None = None, reward_model=None,
                 missing_eos_penalty: float = 0.0, kl_coef: float = 0.0, policy_model=None,
                 reference_model=None, kl_estimator: str = "k1", temperature: float = 1.0,
                 safety_coef: float = 0.0, safety_check=None, render_mode: str | None = None):
        from rlhf_gym.tasks import get_task
        from rlhf_gym.tokenizer import load_tokenizer

        self.task = get_task(task) if isinstance(task, str) else task
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode, self.split = render_mode, split
        self.tokenizer = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else load_tokenizer(tokenizer)
        self.eos_id, self.pad_id = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        self.vocab_size = len(self.tokenizer)
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.max_new_tokens = int(max_new_tokens or self.task.max_new_tokens)
        self.length = self.max_prompt_tokens + self.max_new_tokens
        self.missing_eos_penalty = float(missing_eos_penalty)
        self.examples = self.task.examples(split)
        self._index = {ex.id: i for i, ex in enumerate(self.examples)}
        self.reward_fn = make_env_reward(self.task, reward_model, kl_coef=0.0, safety_coef=safety_coef,
                                         safety_check=safety_check)
        self.kl = None
        if kl_coef:
            from rlhf_gym.rewards.penalties import KLPenalty

            self.kl = KLPenalty(policy_model, reference_model, self.tokenizer, coef=kl_coef,
                                estimator=kl_estimator, temperature=temperature)
        self.observation_space = spaces.Dict({
            "input_ids": spaces.Box(0, self.vocab_size - 1, shape=(self.length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(self.length,), dtype=np.int64),
        })
        self.action_space = spaces.Discrete(self.vocab_size)
        self._example = None

    def _obs(self) -> dict[str, np.ndarray]:
        ids = self._prompt_ids + self._response_ids
        input_ids = np.full(self.length, self.pad_id, dtype=np.int64)
        mask = np.zeros(self.length, dtype=np.int64)
        input_ids[self.length - len(ids):] = ids
        mask[self.length - len(ids):] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        index = pick_example(self, options)
        self._example = self.examples[index]
        ids = self.tokenizer(self._example.prompt)["input_ids"]
        self._prompt_ids = truncate_prompt_ids(ids, self.max_prompt_tokens)
        self._response_ids: list[int] = []
        return self._obs(), {"example_id": self._example.id, "index": index,
                             "references": list(self._example.references), "prompt": self._example.prompt}

    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise TypeError(f"action must be an integer token id, got {type(action).__name__}: {action!r:.80}")
        if not 0 <= int(action) < self.vocab_size:
            raise ValueError(f"token id {int(action)} is out of range for a vocabulary of {self.vocab_size}")
        return int(action)

    def step(self, action):
        if self._example is None:
            raise RuntimeError("call reset() before step()")
        token = self._check_action(action)
        if len(self._response_ids) >= self.max_new_tokens or (self._response_ids and self._response_ids[-1] == self.eos_id):
            raise RuntimeError("the episode is over; call reset()")
        self._response_ids.append(token)
        eos = token == self.eos_id
        # EOS or the env's own token limit: either way the task's episode is over (see the class docstring).
        terminated = eos or len(self._response_ids) >= self.max_new_tokens
        reward, info = 0.0, {"example_id": self._example.id}
        if self.kl is not None:
            kl = float(self.kl.sequence_kl([self._prompt_ids + self._response_ids[:-1]], [[token]])[0])
            info["kl"], info["kl_penalty"] = kl, -self.kl.coef * kl
            reward += info["kl_penalty"]
        if terminated:
            text = self.response_text()
            total, components = self.reward_fn([self._example.prompt], [text], [self._example.references])
            reward += float(total[0])
            info.update({name: float(v[0]) for name, v in components.items()})
            info["response"], info["eos"] = text, eos
            if not eos and self.missing_eos_penalty:
                reward -= self.missing_eos_penalty
                info["missing_eos_penalty"] = -self.missing_eos_penalty
        return self._obs(), reward, terminated, False, info

    def response_text(self) -> str:
        ids = [t for t in self._response_ids if t != self.eos_id]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def render(self) -> str | None:
        if self.render_mode == "ansi" and self._example is not None:
            return f"{self._example.prompt}\n>>> {self.response_text()}"
        return None
