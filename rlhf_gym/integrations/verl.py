"""verl adapter: ``compute_score`` for verl's custom reward function hook.

In a verl config::

    custom_reward_function:
      path: /path/to/site-packages/rlhf_gym/integrations/verl.py
      name: compute_score            # or compute_score_batch with verl's BatchRewardManager
      reward_kwargs: {}              # optional: {reward_model: "chrf", safety_coef: 1.0, split: train}

with a dataset from ``rlhf-gym data --env ID --format verl`` (one row per example:
``data_source`` = the env id, ``prompt`` = chat messages, ``reward_model.ground_truth`` = the
references, ``extra_info`` = ``{"example_id", "split", "index"}``). The score is the env's reward
for the decoded response (what ``env.step`` returns, through the same env), so a verl run
trains on the reward ``bench`` reports. verl itself is not imported here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rlhf_gym.integrations import ID_COLUMN, ExampleScorer, formatted_prompt

_SCORERS: dict[tuple, ExampleScorer] = {}
_LOCK = threading.Lock()


def _scorer(env_id: str, split: str, reward_kwargs: dict[str, Any]) -> ExampleScorer:
    key = (env_id, split, tuple(sorted((k, repr(v)) for k, v in reward_kwargs.items())))
    with _LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = ExampleScorer(env_id, split=split, **reward_kwargs)
        return _SCORERS[key]


def _references(ground_truth: Any) -> list[str] | None:
    if ground_truth is None:
        return None
    if isinstance(ground_truth, str):
        return [ground_truth]
    return [str(x) for x in ground_truth]  # list, tuple or the numpy array a parquet round trip gives


def _example_key(data_source: str, extra_info: Any, reward_kwargs: dict[str, Any]) -> tuple[str, str, Any]:
    if not isinstance(extra_info, dict) or ID_COLUMN not in extra_info:
        raise ValueError(f"extra_info must hold the rlhf-gym {ID_COLUMN!r} (got {extra_info!r:.120}); build the "
                         f"dataset with `rlhf-gym data --env {data_source} --format verl`")
    split = reward_kwargs.pop("split", None) or extra_info.get("split") or "train"
    return data_source, split, extra_info[ID_COLUMN]


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                        extra_infos: Sequence[Any], **reward_kwargs: Any) -> list[float]:
    """verl's batched form (``BatchRewardManager``): one env step per (env id, split) group."""
    keys = [_example_key(ds, info, dict(reward_kwargs)) for ds, info in zip(data_sources, extra_infos)]
    reward_kwargs.pop("split", None)
    out = [0.0] * len(keys)
    groups: dict[tuple[str, str], list[int]] = {}
    for n, (env_id, split, _) in enumerate(keys):
        groups.setdefault((env_id, split), []).append(n)
    for (env_id, split), rows in groups.items():
        scorer = _scorer(env_id, split, reward_kwargs)
        ids = [keys[n][2] for n in rows]
        for n, example_id in zip(rows, ids):
            refs = _references(ground_truths[n])
            if refs is not None and refs != list(scorer.example(example_id).references):
                raise ValueError(f"ground_truth of example {example_id!r} does not match {env_id}'s references: "
                                 "the dataset row and its example id disagree (rebuild it with `rlhf-gym data "
                                 "--format verl`)")
        totals, _ = scorer.score(ids, [solution_strs[n] for n in rows])
        for n, value in zip(rows, totals):
            out[n] = float(value)
    return out


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **reward_kwargs: Any) -> float:
    """verl's per-sample ``compute_score(data_source, solution_str, ground_truth, extra_info)``:
    the env reward of ``solution_str`` (the decoded response) for the example named in
    ``extra_info["example_id"]``; ``ground_truth`` must be that example's references."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **reward_kwargs)[0]


def verl_records(env_id: str, split: str = "train", *, limit: int | None = None,
                 policy: str | None = None) -> list[dict[str, Any]]:
    """Rows in verl's RL dataset layout (write them to parquet for verl's ``data.train_files``)."""
    from rlhf_gym.tasks import get_task

    task = get_task(env_id)
    examples = task.examples(split)[:limit] if limit else task.examples(split)
    tokenizer = meta = None
    if policy:
        from rlhf_gym.policy import resolve_policy

        _, tokenizer, meta = resolve_policy(policy, task.env_id)
    return [{"data_source": task.env_id, "prompt": formatted_prompt(ex, tokenizer, meta, conversational=True),
             "ability": task.kind, "reward_model": {"style": "model", "ground_truth": list(ex.references)},
             "extra_info": {ID_COLUMN: ex.id, "split": split, "index": i}}
            for i, ex in enumerate(examples)]
