"""One reward specification string, understood by the envs, ``bench``/``score`` and the trainers.

``load_reward(spec, task)`` turns a spec into a reward model::

    load_reward("builtin", task)                 # the task's training reward
    load_reward("0.7*builtin + 0.3*chrf", task)  # a weighted sum
    load_reward("gold")                          # the MPNet gold judge
    load_reward("heads/mine.safetensors")        # a head written by ``rlhf-gym train-rm``
    load_reward("hf:OpenAssistant/reward-model-deberta-v3-large-v2")
    load_reward("my_rewards.py:score")           # a batched Python function

Loaded models are cached (encoders are slow to load): the same spec for the same task gives the
same object. :func:`describe_reward` gives the name, hash and encoder a results file records.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import threading
from pathlib import Path
from typing import Any

from rlhf_gym.rewards.base import CallableReward, MetricReward, RewardModel, WeightedReward, as_reward_model

FORMS = (
    "builtin (the task's training reward)",
    "judge (the task's judge)",
    "refjudge (the task's judge of the win rate against the reference; v2: reference-free e5)",
    "gold (the MPNet gold judge)",
    "a metric: " + ", ".join(MetricReward.METRICS),
    "PATH.safetensors (a reward head written by `rlhf-gym train-rm`)",
    "hf:PATH_OR_HUB_ID (a Hugging Face sequence classifier)",
    "FILE.py:FUNCTION (a batched Python function (prompts, responses, references) -> scores)",
    "a weighted sum of those, e.g. 0.7*builtin+0.3*chrf, builtin + 0.5*gold, -1*chrf, builtin - 0.1*bleu",
)

_TERM = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\*\s*(\S.*?)\s*$")
_PY = re.compile(r"^(?P<file>.+\.py):(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")

_CACHE: dict[Any, RewardModel] = {}
_LOCK = threading.RLock()


def _forms() -> str:
    return "\n  - " + "\n  - ".join(FORMS)


def bad_spec(spec: str, why: str) -> ValueError:
    return ValueError(f"bad reward spec {spec!r}: {why}. A reward spec is one of:{_forms()}")


def _resolve_task(task):
    if task is None or not isinstance(task, str):
        return task
    from rlhf_gym.tasks import get_task

    return get_task(task)


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _needs_task(spec: str, atom: str, task) -> None:
    if task is None:
        raise ValueError(f"reward spec {spec!r}: {atom!r} needs a task (pass task= or use it inside an env)")


def _load_python(spec: str, path: Path, fn_name: str) -> CallableReward:
    if not path.is_file():
        raise FileNotFoundError(f"reward spec {spec!r}: Python file not found: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    module_name = f"rlhf_gym_user_reward_{digest[:16]}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        raise ValueError(f"reward spec {spec!r}: {path} has no function {fn_name!r} "
                         f"(functions there: {', '.join(found) or 'none'})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind([], [], [])
        except TypeError:
            raise ValueError(f"reward spec {spec!r}: {fn_name}{sig} must accept (prompts, responses, references) "
                             "-- three lists, returning one score per response") from None
    reward = CallableReward(fn, name=f"py:{path.name}:{fn_name}", batched=True)
    reward._takes_references = True  # checked above: it binds three positional arguments
    reward.sha256 = hashlib.sha256(f"py:{fn_name}:{digest}".encode()).hexdigest()
    return reward


def _load_atom(spec: str, atom: str, task) -> RewardModel:
    """One term without a weight."""
    if atom == "builtin":
        _needs_task(spec, atom, task)
        return task.reward_model()
    if atom == "judge":
        _needs_task(spec, atom, task)
        return task.judge_model()
    if atom == "refjudge":
        _needs_task(spec, atom, task)
        return task.reference_judge_model()
    if atom == "gold":
        gold_model = getattr(task, "gold_model", None)
        if callable(gold_model):
            return gold_model()
        from rlhf_gym.rewards.gold import load_gold_judge

        return load_gold_judge(getattr(task, "kind", None))
    if atom in MetricReward.METRICS:
        return MetricReward(atom)
    if atom.lower().startswith("hf:"):
        source = atom[3:].strip()
        if not source:
            raise bad_spec(spec, "hf: needs a local path or a hub id after the colon")
        from rlhf_gym.rewards.hf import HFRewardModel

        return HFRewardModel(source)
    if atom.endswith(".safetensors"):
        path = Path(atom).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"reward spec {spec!r}: reward head file not found: {path}")
        from rlhf_gym.rewards.embedding import EmbeddingRewardModel

        return EmbeddingRewardModel.from_file(path)
    match = _PY.match(atom)
    if match:
        return _load_python(spec, Path(match["file"]).expanduser(), match["fn"])
    raise bad_spec(spec, f"unknown term {atom!r}")


def _atom_key(atom: str, task) -> Any:
    """Cache key of one term: file-backed terms include the file's mtime and size, so an edited
    head or script is reloaded; task-independent terms ignore the task."""
    if atom in ("builtin", "judge", "refjudge"):
        return ("task", atom, task)
    if atom == "gold":
        return ("gold", task if callable(getattr(task, "gold_model", None)) else getattr(task, "kind", None))
    if atom.endswith(".safetensors") and Path(atom).expanduser().is_file():
        return ("file", _file_key(Path(atom).expanduser()))
    match = _PY.match(atom)
    if match and Path(match["file"]).expanduser().is_file():
        return ("py", _file_key(Path(match["file"]).expanduser()), match["fn"])
    return ("atom", atom)


def _cached_atom(spec: str, atom: str, task) -> RewardModel:
    key = _atom_key(atom, task)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load_atom(spec, atom, task)
        return _CACHE[key]


def parse_spec(spec: str) -> list[tuple[float | None, str]]:
    """``[(weight or None, term), ...]``: terms split on ``+`` (and on `` - `` with spaces, which
    negates the next term); ``w*term`` sets a weight."""
    if not spec.strip():
        raise bad_spec(spec, "it is empty")
    # "a - b" (a minus with spaces on both sides) is "a + -1*b"; an unspaced '-' belongs to a name
    text = re.sub(r"\s+-\s+", " + -", spec)
    terms = []
    for raw in text.split("+"):
        if not raw.strip():
            raise bad_spec(spec, "an empty term around '+'")
        match = _TERM.match(raw)
        if match:
            terms.append((float(match[1]), match[2].strip()))
        elif raw.strip().startswith("-") and raw.strip()[1:].strip():
            terms.append((-1.0, raw.strip()[1:].strip()))
        else:
            terms.append((None, raw.strip()))
    return terms


def _looks_single(spec: str) -> bool:
    """A whole spec that is itself one loadable term (a path may contain '+')."""
    s = spec.strip()
    if s.endswith(".safetensors") or s.lower().startswith("hf:") or _PY.match(s):
        path = s[3:] if s.lower().startswith("hf:") else (_PY.match(s)["file"] if _PY.match(s) else s)
        return Path(path).expanduser().exists()
    return False


def load_reward(spec: Any, task: Any = None) -> RewardModel:
    """A reward model from a spec string (see the module docstring), a reward model or a callable.

    ``task`` is a :class:`rlhf_gym.tasks.TaskSpec` or an env id; ``builtin`` and ``judge`` need it.
    The same spec and task give the same (cached) object.
    """
    if not isinstance(spec, str):
        if spec is None:
            raise TypeError(f"reward spec is None; a reward spec is one of:{_forms()}")
        return as_reward_model(spec)
    task = _resolve_task(task)
    key = ("spec", spec.strip(), task)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    terms = [(None, spec.strip())] if _looks_single(spec) else parse_spec(spec)
    models = [(weight, _cached_atom(spec, atom, task)) for weight, atom in terms]
    if len(models) == 1 and models[0][0] is None:
        model = models[0][1]
    else:
        model = WeightedReward([(1.0 if w is None else w, m) for w, m in models])
    with _LOCK:
        return _CACHE.setdefault(key, model)


def clear_cache() -> None:
    """Forget every loaded reward model (they are reloaded on next use)."""
    with _LOCK:
        _CACHE.clear()


def clear_embedding_caches() -> None:
    """Empty the per-text caches of the process-wide encoders (MiniLM, MPNet) that are loaded;
    the models stay loaded. A text's vector depends in its last bits on the batch it was first
    encoded in, so scoring from cold caches makes numbers independent of earlier calls."""
    import sys

    for module in ("rlhf_gym.rewards.embedding", "rlhf_gym.rewards.gold"):
        encoder = getattr(sys.modules.get(module), "_ENCODER", None)
        if encoder is not None:
            encoder.clear_cache()


def _encoder_of(model: Any) -> str | None:
    for attr in ("encoder_id",):
        if isinstance(getattr(model, attr, None), str):
            return getattr(model, attr)
    encoder = getattr(model, "encoder", None)
    if isinstance(getattr(encoder, "encoder_id", None), str):
        return encoder.encoder_id
    return None


def describe_reward(model: Any) -> dict[str, Any]:
    """``{"name", "sha256", "encoder"}`` of a reward model, for results files.

    ``sha256`` identifies the weights (a head's tensors and encoder, a classifier's files, a metric's
    implementation versions, a Python function's file), ``None`` when unknown. A weighted sum adds
    ``components`` (each with its ``weight``); its hash is ``None`` unless every component has one.
    """
    if isinstance(model, WeightedReward):
        parts = []
        for weight, part in model.parts:
            entry = describe_reward(part)
            entry["weight"] = weight
            parts.append(entry)
        digest = None
        if all(p["sha256"] for p in parts):
            h = hashlib.sha256()
            for p in parts:
                h.update(f"{p['weight']!r}*{p['sha256']}\n".encode())
            digest = h.hexdigest()
        encoders = list(dict.fromkeys(p["encoder"] for p in parts if p["encoder"]))
        return {"name": model.name, "sha256": digest, "encoder": " ; ".join(encoders) or None, "components": parts}
    sha = getattr(model, "sha256", None)
    return {"name": getattr(model, "name", type(model).__name__), "sha256": sha if isinstance(sha, str) else None,
            "encoder": _encoder_of(model)}
