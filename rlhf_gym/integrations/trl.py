"""TRL adapter: an rlhf-gym env as a ``reward_funcs`` entry of TRL's GRPO / RLOO trainers.

::

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from rlhf_gym.integrations.trl import make_reward_func, prompt_records

    dataset = Dataset.from_list(prompt_records("rlhf_gym/Dialogue-v1"))   # columns: prompt, example_id
    trainer = GRPOTrainer(model=..., reward_funcs=make_reward_func("rlhf_gym/Dialogue-v1"),
                          args=GRPOConfig(...), train_dataset=dataset)

TRL passes every dataset column other than ``prompt`` to reward functions as a keyword list
aligned with the completions; the ``example_id`` column is how each completion finds its own
example (references, reward-model input). TRL itself is not imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlhf_gym.integrations import ID_COLUMN, ExampleScorer, formatted_prompt


def completion_text(completion: Any) -> str:
    """The response text of a TRL completion: a plain string, or (conversational format) a list
    of messages whose assistant contents are joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
        parts = []
        for message in completion:
            if message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content", "")
            if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(content if isinstance(content, str) else str(content))
        return "\n".join(parts)
    raise TypeError(f"a completion must be a str or a list of chat messages, got {type(completion).__name__}")


def make_reward_func(env_id: str, *, split: str = "train", id_column: str = ID_COLUMN,
                     **env_kwargs: Any) -> Callable[..., list[float]]:
    """A TRL reward function ``(prompts, completions, **dataset_columns) -> list[float]`` giving
    ``env_id``'s reward (what ``env.step`` returns) for each completion, in the plain or the
    conversational format.

    The dataset needs an ``id_column`` (default ``example_id``) naming each prompt's example in
    ``split``. ``env_kwargs``: ``reward_model`` (a reward spec, as ``gymnasium.make(...,
    reward_model=...)``) and ``safety_coef``. Completions over the env's length limit are cut to
    it, as the project's own trainers do. The function's ``__name__`` (TRL's log key) is
    ``rlhf_gym/<env>``.
    """
    scorer = ExampleScorer(env_id, split=split, **env_kwargs)

    def reward_func(prompts=None, completions=None, **kwargs: Any) -> list[float]:
        if completions is None:
            raise TypeError("reward_func needs completions=... (TRL passes prompts, completions and the dataset "
                            "columns as keywords)")
        ids = kwargs.get(id_column)
        if ids is None:
            columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric",
                                                             "completion_ids", "environments"))
            raise KeyError(f"the dataset has no {id_column!r} column (got {columns}): each prompt needs its rlhf-gym "
                           f"example id; build it with `rlhf-gym data --env {scorer.env_id} --format trl` or "
                           "rlhf_gym.integrations.trl.prompt_records")
        texts = [completion_text(c) for c in completions]
        totals, _ = scorer.score(list(ids), texts)
        return [float(x) for x in totals]

    reward_func.__name__ = scorer.env_id
    reward_func.__qualname__ = scorer.env_id
    reward_func.scorer = scorer  # the env-backed scorer, for inspection
    return reward_func


def prompt_records(env_id: str, split: str = "train", *, conversational: bool = False, limit: int | None = None,
                   policy: str | None = None, id_column: str = ID_COLUMN) -> list[dict[str, Any]]:
    """TRL prompt-dataset rows ``{"prompt", id_column}`` for ``env_id``'s ``split``.

    ``conversational``: the prompt is ``[{"role": "user", "content": ...}]`` (TRL applies the
    model's chat template). ``policy`` (a spec as ``bench --agent``: ``smollm2``, ``hf:PATH`` or a
    policy directory) formats the prompts as the project's trainers format them for that policy
    (instruction, suffix, left truncation to its prompt budget); without it the env's prompt is
    used as is."""
    from rlhf_gym.tasks import get_task

    task = get_task(env_id)
    examples = task.examples(split)[:limit] if limit else task.examples(split)
    tokenizer = meta = None
    if policy:
        from rlhf_gym.policy import resolve_policy

        _, tokenizer, meta = resolve_policy(policy, task.env_id)
    return [{"prompt": formatted_prompt(ex, tokenizer, meta, conversational), id_column: ex.id} for ex in examples]
