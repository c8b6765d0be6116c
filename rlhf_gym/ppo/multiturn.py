"""Multi-turn rollouts for PPO and RLOO (``train ppo|rloo --env rlhf_gym/DialogueMemory-v1`` or ``-v0``).

The trainer (``rlhf_gym/ppo/trainer.py``) is unchanged in what it optimises; only where its
samples come from differs. An iteration plays ``batch_size / (turns_per_episode * k)`` episodes
turn by turn with the policy's OWN sampled replies (the env keeps the history, so later turns see
what the policy said before), and ``turns_per_episode`` turns of each episode become training
samples: the episode's probe turns first (the memory signal is there), then ordinary turns drawn at
random (so the update also sees, and the KL/RM terms keep, ordinary conversation).

Each trained turn is one bandit sample (observation as the policy saw it, reply, the env's reward
of that turn: reward model + ``memory_weight * memory_correct`` at a probe), the usual choice in
multi-turn RLHF: no credit flows from a later turn to an earlier reply (gamma across turns is 0).
That is exact for the memory bonus, which depends only on the probe turn's reply given its
history. With RLOO (k >= 2) the episode is branched at each trained turn: k replies are sampled
from the same observation, each scored by the env from that turn's state
(:meth:`DialogueMemoryEnv.branch`), and the first one continues the episode, so the leave-one-out
baseline compares replies to the same history. PPO (k = 1) uses the sampled reply only.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from rlhf_gym.envs.text_env import fit_action
from rlhf_gym.policy import is_seq2seq
from rlhf_gym.ppo.rollout import Rollout, sample, shape_scores

# info keys of a memory-env step that are bookkeeping, not reward components
_NOT_COMPONENTS = ("index", "turn", "distance")


def is_multi_turn_env(env_id: str) -> bool:
    from rlhf_gym.envs.memory import is_memory_env

    return is_memory_env(env_id)


def policy_env_id(env_id: str) -> str:
    """The task a policy is prompted for on ``env_id``: DialogueMemory's replies are Dialogue turns."""
    if is_multi_turn_env(env_id):
        from rlhf_gym.envs.memory import BASE_TASK

        return BASE_TASK
    return env_id


class EpisodePool:
    """One ``DialogueMemoryEnv`` per episode an iteration plays, all sharing one loaded reward
    model; ``num_envs`` is the number of training samples an iteration yields (the trainer's check)."""

    def __init__(self, env_id: str, num_envs: int, n_episodes: int, split: str = "train", reward_model: Any = None,
                 memory_weight: float | None = None, **penalties):
        from rlhf_gym.envs.memory import DEFAULT_MEMORY_WEIGHT, DialogueMemoryEnv, memory_env_version

        version = memory_env_version(env_id)  # v0 or v1: the memory rule the reward uses
        weight = DEFAULT_MEMORY_WEIGHT if memory_weight is None else float(memory_weight)
        first = DialogueMemoryEnv(split, reward_model=reward_model if reward_model is not None else "builtin",
                                  version=version, memory_weight=weight, **penalties)
        shared = first.reward_fn.reward_model  # one reward model for every episode
        self.envs = [first] + [DialogueMemoryEnv(split, reward_model=shared, version=version, memory_weight=weight,
                                                 **penalties)
                               for _ in range(n_episodes - 1)]
        self.num_envs, self.n_episodes, self.split = int(num_envs), int(n_episodes), split
        self.reward_fn = first.reward_fn  # the trainer moves its encoder to the policy's device
        self.examples, self.task = first.examples, first.task


def select_turns(probe_turns: Sequence[int], n_turns: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` agent turns of an episode: its probe turns first (a random subset if there are more),
    then ordinary turns drawn at random; sorted."""
    if count > n_turns:
        raise ValueError(f"turns_per_episode={count} but an episode has only {n_turns} agent turns")
    probes = sorted(int(t) for t in probe_turns)
    if len(probes) >= count:
        return sorted(int(t) for t in rng.choice(probes, size=count, replace=False))
    ordinary = [t for t in range(n_turns) if t not in set(probes)]
    extra = rng.choice(ordinary, size=count - len(probes), replace=False) if count > len(probes) else []
    return sorted(probes + [int(t) for t in extra])


def _stack(queries: list[torch.Tensor], responses: list[torch.Tensor], pad: int):
    """Left-padded queries and right-padded responses (mask 1 up to and including EOS), as
    ``generate`` lays out one batch, for samples gathered from many generate calls."""
    n, q_len, r_len = len(queries), max(len(q) for q in queries), max(len(r) for r in responses)
    query = torch.full((n, q_len), pad, dtype=torch.long)
    qmask = torch.zeros((n, q_len), dtype=torch.long)
    response = torch.full((n, r_len), pad, dtype=torch.long)
    rmask = torch.zeros((n, r_len), dtype=torch.long)
    for i, (q, r) in enumerate(zip(queries, responses, strict=True)):
        query[i, q_len - len(q):], qmask[i, q_len - len(q):] = q.cpu(), 1  # samples may sit on a GPU
        response[i, :len(r)], rmask[i, :len(r)] = r.cpu(), 1
    return query, qmask, response, rmask


def _components(infos: list[dict]) -> dict[str, np.ndarray]:
    """Numeric per-sample step-info fields (reward components, memory_correct as 1/0/NaN, is_probe)."""
    keys = sorted({k for info in infos for k, v in info.items() if k not in _NOT_COMPONENTS
                   and (isinstance(v, (bool, int, float)) or (k == "memory_correct"))})
    out = {}
    for key in keys:
        values = [info.get(key) for info in infos]
        out[key] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return out


def collect_turns(policy, tokenizer, meta, pool: EpisodePool, episodes: Sequence[int], *, k: int,
                  turns_per_episode: int, view, max_new_tokens: int, temperature: float,
                  rng: np.random.Generator, progress=None, history_replies: str = "policy",
                  generation=None) -> Rollout:
    """Play ``episodes`` (indices into the pool's split) with the policy and return the trained
    turns' samples, each group of ``k`` replies to one observation contiguous (RLOO's layout).
    ``history_replies="human"``: the turns that are not trained are answered with the
    conversation's real human reply instead of a generated one (no generation there).
    ``generation``: another sampling backend (vLLM) instead of HF generate on ``policy``."""
    from rlhf_gym.envs.memory import step_many

    if is_seq2seq(policy):
        raise ValueError("multi-turn training supports decoder-only policies")
    if len(episodes) > pool.n_episodes:
        raise ValueError(f"{len(episodes)} episodes for a pool of {pool.n_episodes}")
    envs = pool.envs[:len(episodes)]
    observations = [env.reset(options={"index": int(i)})[0] for env, i in zip(envs, episodes, strict=True)]
    trained = [set(select_turns(env._episode.probe_at, env._episode.n_turns, turns_per_episode, rng)) for env in envs]
    limit = pool.task.max_response_chars
    samples: list[dict] = []
    active = list(range(len(envs)))
    if history_replies not in ("policy", "human"):
        raise ValueError(f"history_replies must be 'policy' or 'human', got {history_replies!r}")
    while active:
        prompts, owners, human = [], [], {}  # owners: (episode slot, replies for it); human: row -> real reply
        for e in active:
            n = k if envs[e]._turn in trained[e] else 1
            if envs[e]._turn not in trained[e] and history_replies == "human":
                human[len(prompts)] = envs[e]._episode.real_replies[envs[e]._turn]
            prompts += [view(observations[e])] * n
            owners.append((e, n))
        generate = [j for j in range(len(prompts)) if j not in human]
        texts = [fit_action(human[j], limit) if j in human else "" for j in range(len(prompts))]
        q = qm = r = rm = has_eos = None
        rows: dict[int, int] = {}
        if generate:
            q, qm, r, rm, generated, has_eos = sample(policy, tokenizer, meta, [prompts[j] for j in generate],
                                                      max_new_tokens=max_new_tokens, temperature=temperature,
                                                      generation=generation)
            rows = {j: i for i, j in enumerate(generate)}  # prompt row -> row of the generated batch
            for j, i in rows.items():
                texts[j] = fit_action(generated[i], limit)  # the log-probs still cover every generated token
        # Branches (the extra replies to a trained turn) are made before the episode steps on.
        step_envs, kept = [], []
        for e, n in owners:
            step_envs += [envs[e]] + [envs[e].branch() for _ in range(n - 1)]
            kept += [envs[e]._turn in trained[e]] * n
        results = step_many(step_envs, texts)
        for j, (_, reward, _, _, info) in enumerate(results):
            if kept[j]:  # a trained turn: always generated
                i = rows[j]
                samples.append({"prompt": prompts[j], "query": q[i][qm[i].bool()], "response": r[i][rm[i].bool()],
                                "text": texts[j], "has_eos": bool(has_eos[i]), "reward": float(reward), "info": info})
        still = []
        row = 0
        for e, n in owners:
            observations[e] = results[row][0]
            done = results[row][2] or envs[e]._turn > max(trained[e])  # nothing left to train on
            row += n
            if not done:
                still.append(e)
        active = still
        if progress is not None:
            progress(len(samples))
    raw = torch.tensor([s["reward"] for s in samples], dtype=torch.float32)
    eos = torch.tensor([s["has_eos"] for s in samples], dtype=torch.bool)
    query, qmask, response, rmask = _stack([s["query"] for s in samples], [s["response"] for s in samples],
                                           tokenizer.pad_token_id)
    infos = [s["info"] for s in samples]
    return Rollout([s["prompt"] for s in samples], [tuple(i["references"]) for i in infos], query, qmask, response,
                   rmask, [s["text"] for s in samples], eos, raw, shape_scores(raw, eos), _components(infos),
                   [f"{i['example_id']}#{i['turn']}" for i in infos])


def multi_turn_metrics(components: dict[str, np.ndarray]) -> dict[str, float]:
    """Memory accuracy over the trained probe turns and the reward model's mean on ordinary turns."""
    if "is_probe" not in components:
        return {}
    probe = components["is_probe"] > 0.5
    out = {"n_probe_samples": int(probe.sum())}
    if probe.any():
        out["memory_accuracy"] = float(np.mean(components["memory_correct"][probe]))
    if (~probe).any() and "score" in components:
        out["score_non_probe"] = float(np.mean(components["score"][~probe]))
    return out
