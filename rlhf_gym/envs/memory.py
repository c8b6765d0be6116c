"""``rlhf_gym/DialogueMemory-v1`` (and ``-v0``): a multi-turn conversation that tests what the agent remembers.

Episodes replay real conversations (chitchat-dataset; train/validation/test split by conversation
as ``rlhf_gym/Dialogue-v1``). The partner's turns are the real human turns, into which the env
splices synthetic facts (a name, a pet's name, a city, a job, a date, a favourite thing...) and,
some turns later, questions about them; some facts are updated in between, and then only the
latest value is right. The agent answers every partner turn; its replies replace the human ones in
the history. See :mod:`rlhf_gym.memory.plan` for the schedule and the scoring rule.

- observation: the whole conversation so far (``Topic:`` line, ``A:``/``B:`` turns), ending with
  ``B:``, the tag the agent answers as.
- action: the reply text (at most 300 characters, as Dialogue).
- reward: the Dialogue-v1 reward (``reward_model``, default ``builtin``: the proxy head, on the
  Dialogue prompt format of the last six turns) at every turn, plus ``memory_weight`` (default 3.0)
  times ``memory_correct`` (0 or 1) at a probe turn.
- ``memory_correct`` (:func:`rlhf_gym.memory.plan.memory_score`): v0, the latest value named and the
  stale one not; v1 (the current id: the v0 rule was reward-hacked by copying the fact store into
  replies), also no value of another fact of the episode that the partner has stated so far.
- ``info`` of a step: ``turn`` (the answered agent turn), ``is_probe``, ``memory_correct`` (1.0/0.0; None off
  probes), ``memory_correct_v0`` (the v0 rule, on either version), ``names_answer``, ``names_stale``,
  ``other_values_named`` (list; what v1 penalises), ``n_other_values_named``,
  ``distance`` (agent turns since the right value was last said; 0 off probes),
  ``updated``, ``slot``, ``answer``, ``stale``, ``score`` and the other reward components,
  ``memory_bonus``, ``response``, ``references`` (of the answered turn).
- ``reset`` info: ``example_id`` (the conversation id), ``index``, ``turn`` (0), ``n_turns``,
  ``references`` (of turn 0), ``turn_references`` (of every turn: the real human reply, and at a
  probe the answer first, so the ``reference`` agent is an oracle), ``probes`` (turn, slot,
  answer, stale, distance, updated of each probe) and ``source`` (the partner's first turn).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from rlhf_gym.data import DIALOGUE_HISTORY_TURNS, dialogue_prompt
from rlhf_gym.envs.text_env import (MAX_PROMPT_CHARS, check_response, make_env_reward, pick_example,
                                    render_transcript, terminal_observation, text_space)
from rlhf_gym.memory.plan import MEMORY_RULE_VERSIONS, Episode, load_episodes, memory_score

BASE_TASK = "rlhf_gym/Dialogue-v1"
MEMORY_ENV_PREFIX = "rlhf_gym/DialogueMemory-"
DEFAULT_MEMORY_WEIGHT = 3.0  # ~0.75 std of the proxy head's score on the real replies (std 4.0, 60 test episodes)


def check_memory_weight(memory_weight: float) -> float:
    """``memory_weight`` if it is a finite number >= 0 (the env's and the trainer's check), else a ValueError."""
    if not math.isfinite(memory_weight) or memory_weight < 0:
        raise ValueError(f"memory_weight must be a finite number >= 0, got {memory_weight!r}")
    return float(memory_weight)


def is_memory_env(env_id: str) -> bool:
    return env_id.startswith(MEMORY_ENV_PREFIX) or env_id.startswith("DialogueMemory-")


MEMORY_ENV_IDS = tuple(f"{MEMORY_ENV_PREFIX}v{v}" for v in MEMORY_RULE_VERSIONS)


def memory_env_version(env_id: str) -> int:
    """The version of a DialogueMemory id (``rlhf_gym/DialogueMemory-v1`` or ``DialogueMemory-v1`` -> 1);
    an unknown one is an error naming the known ids."""
    name = env_id.split("/")[-1]
    for version in MEMORY_RULE_VERSIONS:
        if name == f"DialogueMemory-v{version}":
            return version
    raise ValueError(f"unknown DialogueMemory env {env_id!r}; known: {', '.join(MEMORY_ENV_IDS)}")


def probe_summary(episode: Episode) -> list[dict[str, Any]]:
    return [{"turn": f.probe, "slot": f.slot, "answer": f.value, "stale": f.first_value, "distance": f.distance,
             "updated": f.updated} for f in episode.facts]


class DialogueMemoryEnv(gym.Env[str, str]):
    """``gymnasium.make("rlhf_gym/DialogueMemory-v1", split="test")``; see the module docstring.
    ``version`` is the memory rule (the registered id sets it; the class default is v0, unchanged)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, split: str = "train", reward_model: Any = "builtin", memory_weight: float = DEFAULT_MEMORY_WEIGHT,
                 render_mode: str | None = None, version: int = 0, **penalties):
        from rlhf_gym.tasks import get_task

        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        check_memory_weight(memory_weight)
        if version not in MEMORY_RULE_VERSIONS:
            raise ValueError(f"unknown DialogueMemory version {version!r}; known: {MEMORY_RULE_VERSIONS}")
        self.version = int(version)
        self.task = get_task(BASE_TASK)
        self.split, self.render_mode, self.memory_weight = split, render_mode, float(memory_weight)
        self.examples = list(load_episodes(split))
        self._index = {ep.id: i for i, ep in enumerate(self.examples)}
        self.reward_fn = make_env_reward(self.task, reward_model, **penalties)
        self.observation_space = text_space(MAX_PROMPT_CHARS, min_length=1)
        self.action_space = text_space(self.task.max_response_chars)
        self._episode: Episode | None = None
        self._example_index = -1

    # -- episode state -------------------------------------------------------------------

    def _history(self, last: int | None) -> str:
        """The conversation so far (its ``last`` utterances; ``None``: all), ending with ``B:``."""
        return dialogue_prompt(self._episode.topic, self._turns, len(self._turns), history=last)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._example_index = pick_example(self, options)
        ep = self._episode = self.examples[self._example_index]
        self._turn = 0
        self._turns = [ep.partner[0]]  # utterances so far: partner, agent, partner, ...
        self._transcript = [self._history(None)]
        info = {"example_id": ep.id, "index": self._example_index, "turn": 0, "n_turns": ep.n_turns,
                "references": [ep.references[0]], "turn_references": list(ep.references),
                "probes": probe_summary(ep), "source": ep.partner[0]}
        return self._history(None), info

    def step(self, action: str):
        return step_many([self], [action])[0]

    def branch(self) -> DialogueMemoryEnv:
        """A copy at the current turn that steps on independently (same episode, reward model and
        settings; its own history): to score several replies to one observation, as the
        multi-turn RLOO trainer does."""
        import copy

        twin = copy.copy(self)  # shallow: the reward model and the episodes are shared, read-only
        twin._turns, twin._transcript = list(self._turns), list(self._transcript)
        return twin

    def _reward_inputs(self, action: Any) -> tuple[str, str, tuple[str, ...]]:
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        if self._turn >= self._episode.n_turns:
            raise RuntimeError("the episode has ended; call reset()")
        response = check_response(action, self.task.max_response_chars)
        # The reward model reads the prompt format it was trained on (Dialogue: the last six turns).
        return self._history(DIALOGUE_HISTORY_TURNS), response, (self._episode.references[self._turn],)

    def _advance(self, response: str, total: float, components: dict[str, float]):
        ep, t = self._episode, self._turn
        prompt = self._history(None)
        info: dict[str, Any] = {"example_id": ep.id, "index": self._example_index, "turn": t,
                                "references": [ep.references[t]], "source": ep.partner[t],
                                "is_probe": t in ep.probe_at, "memory_correct": None, "memory_correct_v0": None,
                                "names_answer": False, "names_stale": False, "other_values_named": [],
                                "n_other_values_named": 0, "distance": 0,
                                "updated": False, "slot": "", "answer": "", "stale": ""}
        info.update(components)
        reward = total
        if t in ep.probe_at:
            fact = ep.facts[ep.probe_at[t]]
            parts = memory_score(response, fact.value, fact.first_value, ep.other_values(ep.probe_at[t], t),
                                 version=self.version)
            correct = float(parts["memory_correct"])
            info.update(memory_correct=correct, memory_correct_v0=float(parts["memory_correct_v0"]),
                        names_answer=parts["names_answer"], names_stale=parts["names_stale"],
                        other_values_named=parts["other_values_named"],
                        n_other_values_named=len(parts["other_values_named"]),
                        distance=fact.distance, updated=fact.updated, slot=fact.slot,
                        answer=fact.value, stale=fact.first_value or "")
            reward += self.memory_weight * correct
        info["memory_bonus"] = reward - total
        info["response"] = response
        self._turns.append(response)
        self._transcript.append(response)
        self._turn = t + 1
        if self._turn >= ep.n_turns:
            return terminal_observation(prompt, response), reward, True, False, info
        self._turns.append(ep.partner[self._turn])
        self._transcript.append(ep.partner[self._turn])
        return self._history(None), reward, False, False, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return render_transcript(self._transcript)
        return None


def step_many(envs: list[DialogueMemoryEnv], actions: list[str]) -> list[tuple]:
    """``env.step(action)`` for each pair, with one batched reward-model call (the first env's
    reward function, so envs stepped together must share their reward settings): what ``bench``
    uses to play many episodes at once. Returns each env's step tuple."""
    if len(envs) != len(actions):
        raise ValueError(f"{len(envs)} envs but {len(actions)} actions")
    inputs = [env._reward_inputs(action) for env, action in zip(envs, actions)]
    prompts, responses, refs = (list(column) for column in zip(*inputs))
    total, components = envs[0].reward_fn(prompts, responses, refs)
    return [env._advance(responses[j], float(total[j]), {k: float(v[j]) for k, v in components.items()})
            for j, env in enumerate(envs)]


def register_memory_envs() -> None:
    registry = gym.envs.registration.registry
    for version, env_id in zip(MEMORY_RULE_VERSIONS, MEMORY_ENV_IDS):
        registry.pop(env_id, None)
        # No vector entry point: gymnasium.make_vec gives SyncVectorEnv/AsyncVectorEnv over this env.
        gym.register(id=env_id, entry_point="rlhf_gym.envs.memory:DialogueMemoryEnv", kwargs={"version": version},
                     disable_env_checker=False)
