"""Utterance-level text environment: observe a prompt, act with a whole response, get its reward.

One episode is one prompt (single-turn), or for dialogue with ``multi_turn=True`` a conversation in
which the agent speaks every other turn and the data's real partner turns answer it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlhf_gym.data import dialogue_prompt
from rlhf_gym.rewards.penalties import EnvReward, KLPenalty, SafetyPenalty

# Characters an observation or a response may hold: ASCII and whitespace, Latin, punctuation and
# symbols, Japanese kana and CJK ideographs, full-width forms and emoji -- what real text in these
# tasks uses. gymnasium's default charset is alphanumeric only, which rejects any sentence.
_CHAR_RANGES = [(0x09, 0x0A), (0x20, 0x7E), (0xA0, 0x24F), (0x2000, 0x214F), (0x2190, 0x27BF),
                (0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
                (0x1F300, 0x1FAFF)]
TEXT_CHARSET = frozenset(chr(c) for lo, hi in _CHAR_RANGES for c in range(lo, hi + 1))
MAX_PROMPT_CHARS = 1 << 15


class SharedText(spaces.Text):
    """``spaces.Text`` whose deep copies share the charset tables (a frozenset, a tuple, a str and a
    dict of ~33k characters, never mutated) and copy only the RNG. A vector env's ``batch_space``
    deep-copies its single space once per slot: with plain ``Text`` that copied ~1.8M objects,
    several seconds per vector env made (each ``score_predictions`` call)."""

    def __deepcopy__(self, memo):
        clone = copy.copy(self)
        clone._np_random = copy.deepcopy(self._np_random, memo)
        return clone


@functools.lru_cache(maxsize=16)
def _text_space_prototype(max_length: int, min_length: int) -> spaces.Text:
    return SharedText(max_length=max_length, min_length=min_length, charset=TEXT_CHARSET)


def text_space(max_length: int, min_length: int = 0) -> spaces.Text:
    """A ``spaces.Text`` over :data:`TEXT_CHARSET`. Building one indexes the ~33k-character
    charset (about 0.1 s), so each env gets a shallow copy of a cached one (its charset tables are
    never mutated) with its own, unseeded RNG: making an env (a server session, a SyncVectorEnv
    slot) costs a millisecond instead."""
    space = copy.copy(_text_space_prototype(int(max_length), int(min_length)))
    space._np_random = None  # gymnasium creates it on first use or seed()
    return space


def check_response(action: Any, max_chars: int) -> str:
    """A response must be a str within the length limit; say exactly what is wrong otherwise."""
    if isinstance(action, np.str_):
        action = str(action)
    if not isinstance(action, str):
        raise TypeError(f"action must be a str (the response text), got {type(action).__name__}: {action!r:.80}")
    if len(action) > max_chars:
        raise ValueError(f"response is {len(action)} characters, over this env's limit of {max_chars}")
    return action


def pick_example(env, options: dict[str, Any] | None) -> int:
    """The example a ``reset`` starts from: ``options={"example_id": ...}`` or ``{"index": i}``
    names one, otherwise the env's RNG draws one. ``env`` has ``examples``, ``_index`` (id ->
    position), ``split`` and ``np_random``."""
    options = options or {}
    if "example_id" in options:
        if options["example_id"] not in env._index:
            raise ValueError(f"example_id {options['example_id']!r} is not in split {env.split!r}")
        return env._index[options["example_id"]]
    if "index" in options:
        index = int(options["index"])
        if not 0 <= index < len(env.examples):
            raise ValueError(f"index {index} out of range for {len(env.examples)} examples")
        return index
    return int(env.np_random.integers(len(env.examples)))


# What an episode's info and final observation hold, shared by TextGenerationEnv and TextVectorEnv so
# the vector env's ``info``/``final_info``/``final_obs`` are exactly what SyncVectorEnv would build
# from the single env.

def example_info(example, index: int) -> dict[str, Any]:
    """The info ``reset`` (and ``step``) gives about the episode's example; ``index`` is its
    position in the split."""
    return {"example_id": example.id, "index": int(index), "references": list(example.references),
            "source": example.source}


def add_step_results(info: dict[str, Any], components: dict[str, np.ndarray], slot: int,
                     response: str) -> dict[str, Any]:
    """``info`` plus each reward component of ``slot`` (a float) and the response text."""
    info.update({name: float(values[slot]) for name, values in components.items()})
    info["response"] = response
    return info


def terminal_observation(prompt: str, response: str) -> str:
    """The observation an answered prompt ends on: the prompt followed by the response."""
    return prompt + " " + response


def render_transcript(parts: list[str]) -> str:
    """``render_mode="ansi"``: the episode so far, one turn per block."""
    return "\n---\n".join(parts)


def make_env_reward(task, reward_model=None, kl_coef: float = 0.0, policy_model=None, reference_model=None,
                    tokenizer=None, kl_estimator: str = "k1", temperature: float = 1.0,
                    safety_coef: float = 0.0, safety_check=None) -> EnvReward:
    """The reward every env of ``task`` computes: the task's reward model unless one is given,
    plus the optional KL and safety penalties.

    ``reward_model`` may be a reward model, a callable, or a spec string understood by
    :func:`rlhf_gym.rewards.spec.load_reward` (``"0.5*builtin+0.5*chrf"``, ``"gold"``, a head file,
    ``"hf:..."``, ``"file.py:fn"``)."""
    if reward_model is None:
        reward_model = task.reward_model()
    elif isinstance(reward_model, str) or not hasattr(reward_model, "name"):
        from rlhf_gym.rewards.spec import load_reward

        reward_model = load_reward(reward_model, task)
    kl = None
    if kl_coef:
        from rlhf_gym.tokenizer import load_tokenizer

        kl = KLPenalty(policy_model, reference_model, tokenizer or load_tokenizer(), coef=kl_coef,
                       estimator=kl_estimator, temperature=temperature)
    safety = SafetyPenalty(safety_coef, safety_check) if safety_coef else None
    return EnvReward(reward_model, kl=kl, safety=safety)


class TextGenerationEnv(gym.Env[str, str]):
    """``gymnasium.make("rlhf_gym/Summarization-v0")`` and friends.

    - observation: the prompt text (dialogue: the conversation so far, ending with the speaker tag
      the agent answers as).
    - action: the response text (``str``, at most ``task.max_response_chars`` characters).
    - reward: the reward-model score, minus optional KL and safety penalties; ``info`` carries
      each component and the ``response``.
    - ``reset(seed=...)`` draws an example with the env's RNG; ``options={"example_id": ...}`` or
      ``{"index": i}`` picks one. ``info``: ``example_id``, ``index`` (position in the split),
      ``references``, ``source`` (and ``turn`` for multi-turn).
    - single-turn: one step per episode, ``terminated=True``, and the final observation is
      ``prompt + " " + response``.
    - ``render_mode="ansi"``: ``render()`` returns the transcript (prompt and turns so far).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: str = "rlhf_gym/Dialogue-v0", split: str = "train", reward_model=None,
                 multi_turn: bool = False, max_turns: int = 3, render_mode: str | None = None, **penalties):
        from rlhf_gym.tasks import get_task

        self.task = get_task(task) if isinstance(task, str) else task
        if multi_turn and self.task.kind != "dialogue":
            raise ValueError(f"multi_turn episodes need a dialogue task, {self.task.env_id} is {self.task.kind}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.split, self.multi_turn, self.max_turns, self.render_mode = split, multi_turn, max_turns, render_mode
        self.examples = self.task.examples(split)
        self._index = {ex.id: i for i, ex in enumerate(self.examples)}
        self.reward_fn = make_env_reward(self.task, reward_model, **penalties)
        self.observation_space = text_space(MAX_PROMPT_CHARS, min_length=1)
        self.action_space = text_space(self.task.max_response_chars)
        self._example = None
        self._example_index = -1
        self._prompt = ""
        self._transcript: list[str] = []

    # -- episode state -------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        info = example_info(self._example, self._example_index)
        if self.multi_turn:
            info["references"] = list(self._references())
            info["turn"] = self._turn
        return info

    def _references(self) -> tuple[str, ...]:
        if self.multi_turn:
            return (self._example.meta["turns"][self._turn],)
        return self._example.references

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._example_index = pick_example(self, options)
        self._example = self.examples[self._example_index]
        if self.multi_turn:
            self._turns = list(self._example.meta["turns"])
            self._turn = self._example.meta["turn"]
            self._agent_turns = 0
            self._prompt = dialogue_prompt(self._example.meta["topic"], self._turns, self._turn)
        else:
            self._prompt = self._example.prompt
        self._transcript = [self._prompt]
        return self._prompt, self._info()

    def step(self, action: str):
        if self._example is None:
            raise RuntimeError("call reset() before step()")
        response = check_response(action, self.task.max_response_chars)
        prompt, refs = self._prompt, self._references()
        total, components = self.reward_fn([prompt], [response], [refs])
        info = add_step_results(self._info(), components, 0, response)
        self._transcript.append(response)
        terminated = True
        if self.multi_turn:
            # The agent's words replace the real ones in the history; the partner's real reply follows.
            self._turns[self._turn] = response
            self._agent_turns += 1
            next_turn = self._turn + 2
            if self._agent_turns < self.max_turns and next_turn < len(self._turns):
                self._turn = next_turn
                self._prompt = dialogue_prompt(self._example.meta["topic"], self._turns, self._turn)
                self._transcript.append(self._turns[next_turn - 1])
                terminated = False
                return self._prompt, float(total[0]), terminated, False, info
        return terminal_observation(prompt, response), float(total[0]), terminated, False, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return render_transcript(self._transcript)
        return None
