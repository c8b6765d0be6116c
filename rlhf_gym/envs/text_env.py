"""Utterance-level text environment: observe a prompt, act with a whole response, get its reward.

One episode is one prompt (single-turn), or for dialogue with ``multi_turn=True`` a conversation in
which the agent speaks every other turn and the data's real partner turns answer it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
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


class TextSpace(spaces.Text):
    """gymnasium's ``Text`` whose deep copy shares the character tables, which never change after
    construction. ``batch_space`` deep-copies a space once per vector slot, and copying these
    33,089 characters (with their index) element by element took about half a second a slot:
    building one 32-slot vector env cost over 10 s."""

    def __deepcopy__(self, memo):
        new = copy.copy(self)
        new._np_random = copy.deepcopy(self._np_random, memo)
        return new


@functools.lru_cache(maxsize=16)
def _text_space_prototype(max_length: int, min_length: int) -> spaces.Text:
    return TextSpace(max_length=max_length, min_length=min_length, charset=TEXT_CHARSET)


def text_space(max_length: int, min_length: int = 0) -> spaces.Text:
    """A ``spaces.Text`` over :data:`TEXT_CHARSET`. Building one indexes the ~33k-character
    charset (about 0.1 s), so each env gets a shallow copy of a cached one (its charset tables are
    never mutated) with its own, unseeded RNG: making an env (a server session, a SyncVectorEnv
    slot) costs a millisecond instead."""
    space = copy.copy(_text_space_prototype(int(max_length), int(min_length)))
    space._np_random = None  # gymnasium creates it on first use or seed()
    return space


# The validity rule for a response, in ONE place: the env's ``step``, ``bench``, ``score`` and the
# leaderboard (which recomputes through ``score``) all apply it, so a response that one of them
# accepts every other accepts too. Valid = a ``str`` of at most ``task.max_response_chars``
# characters (the action space's ``max_length``). The action space's charset is what
# ``action_space.sample()`` draws from; it is not enforced on responses, so a model that writes a
# character outside it (Cyrillic, Hangul) is scored rather than rejected.

def response_problem(action: Any, max_chars: int) -> str | None:
    """Why ``action`` is not a valid response of an env with this limit, or None when it is."""
    if not isinstance(action, str):
        return f"not a str but {type(action).__name__}: {action!r:.80}"
    if len(action) > max_chars:
        return f"{len(action)} characters, over this env's limit of {max_chars}"
    return None


def check_response(action: Any, max_chars: int) -> str:
    """A response must be a str within the length limit; say exactly what is wrong otherwise."""
    if isinstance(action, np.str_):
        action = str(action)
    if not isinstance(action, str):
        raise TypeError(f"action must be a str (the response text), got {type(action).__name__}: {action!r:.80}")
    problem = response_problem(action, max_chars)
    if problem is not None:
        raise ValueError(f"response is {problem}")
    return action


def check_responses(ids: Sequence[Any], responses: Sequence[Any], max_chars: int, who: str) -> None:
    """Every response valid, or one ValueError naming ``who`` (the agent or the file), how many
    are invalid and the first few example ids with the reason. ``bench`` checks each batch as an
    agent returns it, ``score`` a whole file before any model loads."""
    bad = [(i, problem) for i, r in zip(ids, responses)
           if (problem := response_problem(str(r) if isinstance(r, np.str_) else r, max_chars)) is not None]
    if bad:
        shown = "; ".join(f"{i}: {problem}" for i, problem in bad[:3])
        raise ValueError(f"{who}: {len(bad)} of {len(responses)} responses are not valid actions of this env "
                         f"(a str of at most {max_chars} characters): {shown}" + (" ..." if len(bad) > 3 else ""))


def fit_action(text: str, max_chars: int) -> str:
    """A generated response cut to the env's action limit (a character budget; a token budget
    rarely reaches it). What built-in model agents and the RL rollouts do with a longer text;
    an agent's own output is never cut by the harness, only rejected."""
    return text if len(text) <= max_chars else text[:max_chars]


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
    ``"hf:..."``, ``"file.py:fn"``). ``safety_check`` is ``"classifier"`` (the default, used when
    ``safety_coef`` is set), ``"blocklist"``, ``"classifier+blocklist"`` or a batched callable
    ``(prompts, responses, references) -> unsafe scores in [0, 1]`` (:mod:`rlhf_gym.rewards.safety`)."""
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
    if safety_coef:
        safety = SafetyPenalty(safety_coef, safety_check)
    else:  # no penalty, but a bad safety_check is still an error here rather than silently unused
        safety = None
        if safety_check is not None:
            from rlhf_gym.rewards.safety import load_safety_check

            load_safety_check(safety_check)
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
            # A turn whose real reply is not a valid action is never asked for (the episode ends);
            # v0/v1 dialogue ("keep") asked for it and stays as published.
            answerable = next_turn < len(self._turns) and (self.task.overlong_references == "keep" or len(
                self._turns[next_turn]) <= self.task.max_response_chars)
            if self._agent_turns < self.max_turns and answerable:
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
