"""``rlhf-gym bench --envs rlhf_gym/DialogueMemory-v1`` (or ``-v0``): play whole episodes and report memory.

All episodes of the split (or the first ``limit``) run in lockstep: at each turn the agent gets
every unfinished episode's observation in one batch, and each env's ``step`` scores the replies, so
the reported reward is the env's reward. Agents receive per-turn infos shaped like the
single-turn envs' (``references`` = that turn's reference, ``source`` = the partner's turn), so
``reference``, ``lead`` and every model agent work unchanged.

Metrics: memory accuracy over probe turns with a 95% Wilson interval, by distance bucket, by
updated vs not and by slot; the reward-model score on non-probe and on probe turns with
bootstrap CIs; reply length and repetition.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhf_gym import metrics
from rlhf_gym.memory.plan import DISTANCE_BUCKETS, distance_bucket


def play_episodes(agent, split: str = "test", limit: int | None = None, reward: Any = None,
                  safety_coef: float = 0.0, batch_size: int = 32, show_progress: bool = True,
                  memory_weight: float | None = None, version: int = 0,
                  device: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    """Run ``agent`` through the first ``limit`` episodes of DialogueMemory-v``version``; (one record
    per agent turn, reward model). ``device``: where the reward model's encoder runs (default: its own,
    the CPU)."""
    from rlhf_gym.envs.memory import DEFAULT_MEMORY_WEIGHT, DialogueMemoryEnv, step_many
    from rlhf_gym.evaluation import SCORE_BATCH
    from rlhf_gym.memory.plan import load_episodes

    n = len(load_episodes(split)) if limit is None else min(limit, len(load_episodes(split)))
    if n < 1:
        raise ValueError(f"no DialogueMemory episodes to play (split {split!r}, limit {limit})")
    penalties = {"safety_coef": safety_coef} if safety_coef else {}
    weight = DEFAULT_MEMORY_WEIGHT if memory_weight is None else memory_weight
    first = DialogueMemoryEnv(split, reward_model=reward or "builtin", memory_weight=weight, version=version,
                              **penalties)
    shared_reward = first.reward_fn.reward_model  # one loaded reward model for every episode
    if device is not None:
        from rlhf_gym.bench_device import place_models

        place_models(device, shared_reward)
    envs = [first] + [DialogueMemoryEnv(split, reward_model=shared_reward, memory_weight=weight, version=version,
                                        **penalties)
                      for _ in range(n - 1)]
    observations, infos = zip(*(env.reset(options={"index": i}) for i, env in enumerate(envs)))
    observations, infos = list(observations), list(infos)
    records: list[dict[str, Any]] = []
    active = list(range(n))
    max_turns = max(info["n_turns"] for info in infos)
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=max_turns, desc=f"DialogueMemory: {agent.name}", unit="turn", leave=False)
    while active:
        batch_obs = [observations[i] for i in active]
        batch_infos = [{"example_id": infos[i]["example_id"], "turn": envs[i]._turn,
                        "references": [infos[i]["turn_references"][envs[i]._turn]],
                        "source": envs[i]._episode.partner[envs[i]._turn], "meta": {}} for i in active]
        replies: list[str] = []
        for start in range(0, len(active), batch_size):
            out = agent.act(batch_obs[start:start + batch_size], batch_infos[start:start + batch_size])
            if out is None or isinstance(out, str) or len(out) != len(batch_obs[start:start + batch_size]):
                raise ValueError(f"agent {agent.name!r} must return one response string per observation")
            replies.extend(out)
        for reply in replies:
            if not isinstance(reply, str):
                raise ValueError(f"agent {agent.name!r} returned {type(reply).__name__}, not str")
        replies = [reply[: envs[i].task.max_response_chars] for i, reply in zip(active, replies)]
        still = []
        for start in range(0, len(active), SCORE_BATCH):  # one reward-model call per chunk of episodes
            chunk = active[start:start + SCORE_BATCH]
            steps = step_many([envs[i] for i in chunk], replies[start:start + SCORE_BATCH])
            for i, reply, (obs, reward, terminated, _, info) in zip(chunk, replies[start:], steps):
                records.append({"id": info["example_id"], "turn": info["turn"], "partner": info["source"],
                                "prediction": reply, "references": info["references"], "reward": float(reward),
                                "score": float(info.get("score", reward)), "is_probe": bool(info["is_probe"]),
                                "memory_correct": info["memory_correct"],
                                "memory_correct_v0": info["memory_correct_v0"],
                                "other_values_named": list(info["other_values_named"]),
                                "distance": int(info["distance"]),
                                "updated": bool(info["updated"]), "slot": info["slot"], "answer": info["answer"],
                                "stale": info["stale"]})
                observations[i] = obs
                if not terminated:
                    still.append(i)
        active = still
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    return records, shared_reward


def _mean_ci(values) -> dict[str, float | int]:
    values = np.asarray(values, dtype=np.float64)
    low, high = metrics.bootstrap_ci(values)
    return {"mean": float(values.mean()) if values.size else float("nan"), "ci_low": low, "ci_high": high,
            "n": int(values.size)}


def memory_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics block of a DialogueMemory results file, from per-turn records."""
    probes = [r for r in records if r["is_probe"]]
    others = [r for r in records if not r["is_probe"]]
    correct = lambda rs: [r["memory_correct"] == 1.0 for r in rs]  # noqa: E731
    by_distance = {label: metrics.rate_with_ci(correct([r for r in probes if distance_bucket(r["distance"]) == label]))
                   for label, _, _ in DISTANCE_BUCKETS}
    slots = sorted({r["slot"] for r in probes})
    replies = [r["prediction"] for r in records]
    return {
        "memory_accuracy": metrics.rate_with_ci(correct(probes)),
        "memory_by_distance": by_distance,
        "memory_by_update": {"updated": metrics.rate_with_ci(correct([r for r in probes if r["updated"]])),
                             "not_updated": metrics.rate_with_ci(correct([r for r in probes if not r["updated"]]))},
        "memory_by_slot": {s: metrics.rate_with_ci(correct([r for r in probes if r["slot"] == s])) for s in slots},
        # The Dialogue-v1 reward model's score (without the memory bonus) where no fact is asked for.
        "score_non_probe": _mean_ci([r["score"] for r in others]),
        "score_probe": _mean_ci([r["score"] for r in probes]),
        "reward_mean": float(np.mean([r["reward"] for r in records])),
        "length": metrics.length_stats(replies),
        "most_repeated_share": metrics.most_repeated_share(replies),
    }


def memory_block(agent_spec: str, env_id: str, *, split: str = "test", limit: int | None = None,
                 batch_size: int = 32, reward: str | None = None, safety_coef: float = 0.0,
                 show_progress: bool = True, device: str | None = None,
                 agent_device: str | None = None) -> dict[str, Any]:
    """The per-env block ``bench`` writes for a DialogueMemory env. ``device`` (resolved, as
    :func:`rlhf_gym.bench_device.resolve_bench_device` gives it): where the reward model's encoder
    runs; ``agent_device``: where a model agent that takes a device runs (None: its default)."""
    import rlhf_gym.memory.agents  # noqa: F401  (registers smollm2-full/-window/-memory)
    from rlhf_gym.agents import make_agent
    from rlhf_gym.envs.memory import BASE_TASK, memory_env_version
    from rlhf_gym.tasks import get_task

    version = memory_env_version(env_id)
    agent = make_agent(agent_spec, get_task(BASE_TASK), device=agent_device)
    records, reward_model = play_episodes(agent, split, limit, reward, safety_coef, batch_size, show_progress,
                                          version=version, device=device)
    block = block_from_records(records, version, split=split, limit=limit, reward_model=reward_model,
                               safety_coef=safety_coef)
    block["device"] = device or "cpu"
    return block


def block_from_records(records: list[dict[str, Any]], version: int, *, split: str, limit: int | None,
                       reward_model: Any, safety_coef: float = 0.0) -> dict[str, Any]:
    """A DialogueMemory-v``version`` results block from per-turn records (``play_episodes``)."""
    from rlhf_gym.envs.memory import DEFAULT_MEMORY_WEIGHT, MEMORY_ENV_PREFIX
    from rlhf_gym.evaluation import _model_id

    n_episodes = len({r["id"] for r in records})
    return {
        "env_id": f"{MEMORY_ENV_PREFIX}v{version}", "task": "dialogue-memory", "version": version,
        "source": "chitchat",
        "split": split, "n": n_episodes, "n_turns": len(records), "n_probes": sum(r["is_probe"] for r in records),
        "limit": limit, "memory_weight": DEFAULT_MEMORY_WEIGHT, "reward_model": _model_id(reward_model),
        "judge": None, "safety_coef": float(safety_coef), "metrics": memory_metrics(records), "generations": records,
    }


def _fmt(rate: dict[str, Any]) -> str:
    if not rate or not rate.get("n"):
        return "-"
    return f"{metrics.format_rate(rate)} n={rate['n']}"  # interval rounded outwards: the mean is inside it


def memory_table(results: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"rlhf-gym bench (memory): {results['agent']['spec']}",
                  caption="memory accuracy over probe turns, 95% Wilson CI; score: Dialogue-v1 reward model "
                          "on non-probe turns, bootstrap 95% CI")
    columns = ["env", "episodes", "memory acc"] + [f"d {label}" for label, _, _ in DISTANCE_BUCKETS]
    columns += ["updated", "not updated", "score (non-probe)", "words"]
    for column in columns:
        table.add_column(column, justify="left" if column == "env" else "right")
    for env_id, block in results["envs"].items():
        if block.get("task") != "dialogue-memory":
            continue
        m = block["metrics"]
        s = m["score_non_probe"]
        table.add_row(env_id.split("/", 1)[-1], str(block["n"]), _fmt(m["memory_accuracy"]),
                      *[_fmt(m["memory_by_distance"][label]) for label, _, _ in DISTANCE_BUCKETS],
                      _fmt(m["memory_by_update"]["updated"]), _fmt(m["memory_by_update"]["not_updated"]),
                      metrics.format_rate(s), f"{m['length']['mean_words']:.1f}")
    return table
