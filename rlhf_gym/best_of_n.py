"""Best-of-n: sample n responses per prompt from a policy and return the one the reward model
scores highest. A strong inference-time baseline for RL fine-tuning (it spends n x the
generation compute instead of training), and a probe of reward over-optimisation: if best-of-n
wins under the training reward but loses under the held-out judge, the reward is being gamed.

    rlhf-gym bench --agent bon:baselines/sft/translation,n=8 --envs rlhf_gym/Translation-v0
    rlhf-gym bench --agent bon:smollm2,n=4 --envs rlhf_gym/Summarization-v0

The policy is an rlhf-gym policy directory or any ``resolve_policy`` spec (``smollm2``,
``hf:MODEL``); a spec needs the ``env_id`` it is prompted for (the bench passes its task's).

Under ``bench``/``score`` the agent is bound to the bench's env scorer (``bind_env``): the n
candidates are scored by stepping that env (its reward model + safety penalty + action-validity
rule), the same reward path PPO trains on and the bench reports. Called directly (no env), it
scores with its reward model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


class BestOfNAgent:
    def __init__(self, path: str | Path, n: int = 8, temperature: float = 1.0, reward: str = "builtin",
                 max_new_tokens: int | None = None, batch_size: int = 16, seed: int = 0, reward_model=None,
                 device: str = "cpu", env_id: str | None = None, max_response_chars: int | None = None):
        from rlhf_gym.policy import POLICY_META, load_policy, resolve_policy, task_reward

        if int(n) < 1:
            raise ValueError(f"best-of-n needs n >= 1, got {n}")
        if (Path(path) / POLICY_META).exists():
            self.model, self.tokenizer, self.meta = load_policy(path, device)
        elif env_id is None:
            raise ValueError(f"{path!r} is not an rlhf-gym policy directory; a policy spec such as smollm2 "
                             "needs env_id (the task it is prompted for)")
        else:
            self.model, self.tokenizer, self.meta = resolve_policy(str(path), env_id, device)
        self.n, self.temperature, self.seed = int(n), float(temperature), int(seed)
        self.max_new_tokens = max_new_tokens or self.meta.max_new_tokens
        self.batch_size = int(batch_size)
        self.max_response_chars = max_response_chars  # candidates are cut to the env's limit before scoring
        # The reward model of the policy's env: the TRAINING reward, never the bench judge.
        self.reward_model = reward_model if reward_model is not None else task_reward(self.meta.env_id, reward)
        self.reward_spec = reward if reward_model is None else None
        self.name = f"bon:{Path(path).name},n={self.n}"
        self.env_scorer = None

    def bind_env(self, scorer) -> None:
        """Score candidates by stepping ``scorer``'s env (an ``EnvScorer``): same split and safety
        penalty; the reward is this agent's reward spec when it names one other than the env's."""
        from rlhf_gym.evaluation import EnvScorer

        device = getattr(scorer, "device", None)  # bench --device: candidates scored where the bench scores
        if self.reward_spec is None:  # an explicit reward_model object: keep scoring with it
            if device is not None:
                from rlhf_gym.bench_device import place_models

                place_models(device, self.reward_model)
            return
        reward = scorer.reward if self.reward_spec == "builtin" else self.reward_spec
        self.env_scorer = EnvScorer(scorer.task, scorer.split, reward=reward, safety_coef=scorer.safety_coef,
                                    batch_size=scorer.batch_size, device=device)

    def act(self, observations: Sequence[str], infos: Sequence[dict] | None = None) -> list[str]:
        import torch

        from rlhf_gym.ppo.rollout import fit_action, sample, score

        torch.manual_seed(self.seed)
        infos = infos or [{} for _ in observations]
        chosen: list[str] = []
        for i in range(0, len(observations), self.batch_size):
            prompts = list(observations[i:i + self.batch_size])
            refs = [tuple((info or {}).get("references", ())) for info in infos[i:i + self.batch_size]]
            *_, texts, has_eos = sample(self.model, self.tokenizer, self.meta, prompts,
                                        max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                        num_return_sequences=self.n)
            if self.max_response_chars is not None:
                from rlhf_gym.envs.text_env import fit_action

                texts = [fit_action(t, self.max_response_chars) for t in texts]
            rep = lambda xs: [x for x in xs for _ in range(self.n)]  # noqa: E731 - prompt-major like generate
            indices = [(info or {}).get("index") for info in infos[i:i + self.batch_size]]
            if self.env_scorer is not None and None not in indices:
                # the env's reward for every candidate: one step of its vector env per chunk
                texts = [fit_action(t, self.env_scorer.task.max_response_chars) for t in texts]
                scores, _ = self.env_scorer.score([int(x) for x in rep(indices)], texts)
            else:
                # One batched reward call for all n samples of the batch's prompts. Reference-free
                # reward models ignore refs; metric rewards need them from infos.
                _, scores = score(self.reward_model, rep(prompts), texts, rep(refs), has_eos)
            best = np.asarray(scores).reshape(len(prompts), self.n).argmax(1)
            chosen.extend(texts[j * self.n + int(b)] for j, b in enumerate(best))
        return chosen
