"""Adapters for outside trainers: TRL reward functions (:mod:`rlhf_gym.integrations.trl`) and
verl's ``compute_score`` (:mod:`rlhf_gym.integrations.verl`).

Both score through :class:`ExampleScorer`, which steps the task's own vector env
(:class:`rlhf_gym.evaluation.EnvScorer`): the reward a TRL or verl run trains on is the reward
``env.step`` gives and ``bench`` reports, under the same env id. Neither trainer is imported
here; a trainer's dataset carries each prompt's example id so a completion is scored against
its own example (``rlhf-gym data --format trl|trl-chat|verl`` writes such datasets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ID_COLUMN = "example_id"


class ExampleScorer:
    """Env rewards for ``(example id, response)`` pairs of one env id and split.

    ``reward_model`` (a spec such as ``"chrf"`` or ``"0.7*builtin+0.3*chrf"``, or a reward
    model) and ``safety_coef`` are the env's own kwargs; KL is the trainer's business (TRL's
    ``beta``, verl's ``kl_ctrl``), so ``kl_coef`` is refused. A response longer than the env's
    limit is cut to it, as the project's own PPO/RLOO rollouts do, instead of failing a training
    step.
    """

    def __init__(self, env_id: str, split: str = "train", reward_model: Any = None, safety_coef: float = 0.0,
                 **env_kwargs: Any):
        from rlhf_gym.evaluation import EnvScorer
        from rlhf_gym.tasks import get_task

        if env_kwargs:
            raise TypeError(f"unsupported env kwargs for a trainer reward: {', '.join(sorted(env_kwargs))}; "
                            "supported: split, reward_model, safety_coef (the KL penalty is the trainer's own: "
                            "TRL's beta, verl's kl_ctrl)")
        task = get_task(env_id)
        if env_id not in (task.env_id, task.env_id.split("/", 1)[1]):
            raise ValueError(f"{env_id} is not an utterance-level env id; trainer rewards score whole responses "
                             f"of {task.env_id}")
        self.task, self.env_id, self.split = task, task.env_id, split
        self.examples = task.examples(split)
        self._index = {ex.id: i for i, ex in enumerate(self.examples)}
        self._scorer = EnvScorer(task, split, reward=reward_model, safety_coef=safety_coef)

    def example(self, example_id: Any):
        return self.examples[self.indices([example_id])[0]]

    def indices(self, example_ids: Sequence[Any]) -> list[int]:
        keys = [str(x) for x in example_ids]
        unknown = [k for k in keys if k not in self._index]
        if unknown:
            raise ValueError(f"{len(unknown)} example ids are not in split {self.split!r} of {self.env_id}, e.g. "
                             f"{', '.join(map(repr, unknown[:3]))}; build the dataset with `rlhf-gym data --env "
                             f"{self.env_id} --split {self.split} --format trl` (or pass split=...)")
        return [self._index[k] for k in keys]

    def score(self, example_ids: Sequence[Any], responses: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total reward, reward components) per response, from stepping the env."""
        from rlhf_gym.ppo.rollout import fit_action

        if len(example_ids) != len(responses):
            raise ValueError(f"{len(example_ids)} example ids for {len(responses)} responses")
        for n, text in enumerate(responses):
            if not isinstance(text, str):
                raise TypeError(f"response {n} must be a str, got {type(text).__name__}")
        limit = self.task.max_response_chars
        return self._scorer.score(self.indices(example_ids), [fit_action(t, limit) for t in responses])


def formatted_prompt(example, tokenizer=None, meta=None, conversational: bool = False):
    """The prompt a trainer feeds its policy for ``example``: the env's prompt as is, or, given a
    policy's ``(tokenizer, meta)``, formatted exactly as the project's own trainers format it
    (chat instruction, prompt suffix, left truncation to ``meta.max_prompt_len`` tokens).
    Conversational prompts are one user message."""
    if meta is None:
        return [{"role": "user", "content": example.prompt}] if conversational else example.prompt
    from rlhf_gym.policy import chat_message, encode_prompts

    if meta.chat_template:
        message = [{"role": "user", "content": chat_message(tokenizer, example.prompt, meta)}]
        if conversational:
            return message
        return tokenizer.apply_chat_template(message, add_generation_prompt=True, tokenize=False)
    if conversational:
        raise ValueError(f"this policy ({meta.info.get('base_policy', meta.env_id)}) has no chat template: "
                         "use the plain prompt format (--format trl)")
    return tokenizer.decode(encode_prompts(tokenizer, [example.prompt], meta)[0])
