"""A batched vector env: ``num_envs`` prompts per step, all scored with one reward-model call.

``TextVectorEnv`` behaves step for step like ``gymnasium.vector.SyncVectorEnv`` over
``TextGenerationEnv`` in ``AutoresetMode.SAME_STEP`` (same seeds, same prompts, same rewards, same
info), only faster: one reward-model call per step instead of one per slot.

Episodes are one response long, so every slot ends and is reset within the step that answers it:
``step`` returns the rewards for the prompts just answered and the next prompts at once, with
``terminated`` all True. As in gymnasium's SAME_STEP mode, ``info`` holds the next episodes' reset
info, and ``info["final_obs"]`` / ``info["final_info"]`` the answered ones' final observation
(``prompt + " " + response``) and step info (``example_id``, ``index``, ``references``,
``source``, every reward component such as ``score``, ``kl_penalty``, ``safety_penalty``, and
``response``). Every key ``k`` comes with gymnasium's boolean mask ``_k`` (nested in
``final_info`` too).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_gym.envs.text_env import (MAX_PROMPT_CHARS, TextGenerationEnv, add_step_results, check_response,
                                    example_info, make_env_reward, pick_example, render_transcript,
                                    terminal_observation, text_space)


class TextVectorEnv(VectorEnv):
    """``gymnasium.make_vec("rlhf_gym/Dialogue-v0", num_envs=8)``, or ``TextVectorEnv(task, num_envs)``.

    - ``reset(seed=s)`` seeds slot i with ``s + i`` (a list gives one seed per slot); slot i then
      draws exactly the examples a ``TextGenerationEnv`` reset with that seed would.
    - ``reset(options=...)``: ``{"example_ids": [...]}`` or ``{"indices": [...]}`` (one per slot)
      name the prompts; ``{"example_id": x}`` or ``{"index": i}`` give every slot the same one, as
      SyncVectorEnv passes options to each sub-env; ``{"reset_mask": bool array}`` resets only
      those slots (gymnasium's convention).
    - ``step(responses)``: a sequence of ``num_envs`` response strings.
    - ``render_mode="ansi"``: ``render()`` is a tuple of each slot's transcript, as the single env
      renders it. After a step the slots have already moved on to their next prompts (SAME_STEP);
      the answered transcripts are in ``info["final_obs"]``.
    """

    metadata = {**TextGenerationEnv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task: str = "rlhf_gym/Dialogue-v0", num_envs: int = 8, split: str = "train",
                 reward_model=None, max_episode_steps: int | None = None, render_mode: str | None = None,
                 multi_turn: bool = False, **penalties):
        from rlhf_gym.tasks import get_task

        del max_episode_steps  # every episode is one response long; accepted for gymnasium.make_vec
        if multi_turn:
            raise ValueError("TextVectorEnv batches single-turn episodes only; for multi-turn episodes use "
                             "gymnasium.make_vec('rlhf_gym/Dialogue-MultiTurn-v0', vectorization_mode='sync')")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.task = get_task(task) if isinstance(task, str) else task
        self.num_envs, self.split, self.render_mode = int(num_envs), split, render_mode
        self.metadata = dict(self.metadata)
        self.examples = self.task.examples(split)
        self._index = {ex.id: i for i, ex in enumerate(self.examples)}
        self.reward_fn = make_env_reward(self.task, reward_model, **penalties)
        self.single_observation_space = text_space(MAX_PROMPT_CHARS, min_length=1)
        self.single_action_space = text_space(self.task.max_response_chars)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(self.num_envs)]
        self._current: list[int | None] = [None] * self.num_envs
        self._transcripts: list[list[str]] = [[] for _ in range(self.num_envs)]

    # -- helpers -------------------------------------------------------------------------

    def _seeds(self, seed) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"If seeds are passed as a list the length must match num_envs={self.num_envs} "
                             f"but got length={len(seeds)}.")
        return seeds

    def _reset_mask(self, mask) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=bool)
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},), "
                             f"got {mask!r}")
        if not mask.any():
            raise ValueError("options['reset_mask'] must reset at least one slot")
        return mask

    def _named_indices(self, options: dict[str, Any]) -> list[int] | None:
        """The per-slot example positions ``options`` names, if it names them per slot."""
        if "example_ids" in options:
            missing = [i for i in options["example_ids"] if i not in self._index]
            if missing:
                raise ValueError(f"example ids not in split {self.split!r}: {missing[:5]}")
            indices = [self._index[i] for i in options["example_ids"]]
        elif "indices" in options:
            indices = [int(i) for i in options["indices"]]
            bad = [i for i in indices if not 0 <= i < len(self.examples)]
            if bad:
                raise ValueError(f"indices {bad[:5]} out of range for {len(self.examples)} examples")
        else:
            return None
        if len(indices) != self.num_envs:
            raise ValueError(f"options name {len(indices)} prompts for {self.num_envs} slots")
        return indices

    def _pick(self, slot: int, options: dict[str, Any] | None) -> int:
        """The single env's rule (``pick_example``) on this slot: a named ``example_id``/``index``,
        else a draw from the slot's RNG."""
        view = SimpleNamespace(examples=self.examples, _index=self._index, split=self.split, np_random=self._rngs[slot])
        return pick_example(view, options)

    def _start(self, slot: int, index: int, infos: dict[str, Any]) -> dict[str, Any]:
        """Begin a new episode on ``slot`` with example ``index``; add its reset info to ``infos``."""
        example = self.examples[index]
        self._current[slot] = index
        self._transcripts[slot] = [example.prompt]
        return self._add_info(infos, example_info(example, index), slot)

    def _observations(self) -> tuple[str, ...]:
        return tuple(self.examples[i].prompt if i is not None else "" for i in self._current)

    # -- gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Returns ``(prompts, info)``: a tuple of ``num_envs`` prompt strings and, for every key
        ``k`` of the single env's reset info (``example_id``, ``index``, ``references``,
        ``source``), an array ``info[k]`` over slots with its mask ``info["_k"]``."""
        seeds = self._seeds(seed)
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        named = self._named_indices(options)
        infos: dict[str, Any] = {}
        for slot in np.flatnonzero(mask):
            slot = int(slot)
            if seeds[slot] is not None:
                self._rngs[slot] = seeding.np_random(seeds[slot])[0]
            infos = self._start(slot, named[slot] if named is not None else self._pick(slot, options), infos)
        return self._observations(), infos

    def step(self, actions: Sequence[str]):
        """Answer every slot's prompt. Returns ``(next prompts, rewards (float64), terminated (all
        True), truncated (all False), info)`` with ``info`` as SyncVectorEnv builds it in
        SAME_STEP mode: ``final_obs``, ``final_info`` (per-slot arrays of every reward component
        and ``response``, each with its ``_`` mask) with their masks, then the next episodes'
        reset info."""
        if any(i is None for i in self._current):
            raise RuntimeError("call reset() before step()")
        if isinstance(actions, str) or len(actions) != self.num_envs:
            raise ValueError(f"step() needs a sequence of {self.num_envs} response strings")
        responses = [check_response(a, self.task.max_response_chars) for a in actions]
        answered = list(self._current)
        examples = [self.examples[i] for i in answered]
        total, components = self.reward_fn([ex.prompt for ex in examples], responses,
                                           [ex.references for ex in examples])
        rewards = np.array(total, dtype=np.float64).reshape(self.num_envs)
        infos: dict[str, Any] = {}
        for slot, (index, example, response) in enumerate(zip(answered, examples, responses)):
            final_info = add_step_results(example_info(example, index), components, slot, response)
            infos = self._add_info(infos, {"final_obs": terminal_observation(example.prompt, response),
                                           "final_info": final_info}, slot)
            infos = self._start(slot, self._pick(slot, None), infos)  # SAME_STEP autoreset
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._observations(), rewards, terminated, truncated, infos

    def render(self) -> tuple[str | None, ...]:
        """Each slot's transcript (``render_mode="ansi"``), as ``TextGenerationEnv.render``."""
        if self.render_mode == "ansi":
            return tuple(render_transcript(t) for t in self._transcripts)
        return tuple(None for _ in range(self.num_envs))
