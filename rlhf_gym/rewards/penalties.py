"""What an environment adds to the reward-model score: a KL penalty to a reference policy and a
safety penalty. ``EnvReward`` combines them so every env (utterance, token, vector) computes its
reward in one place, and reports each component in ``info``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rlhf_gym.rewards.base import RewardModel, as_reward_model

KL_ESTIMATORS = ("k1", "k3")


def kl_estimate(logp: np.ndarray | float, ref_logp: np.ndarray | float, estimator: str = "k1"):
    """Per-token KL(pi || ref) estimate from the sampled token's log-probs.

    k1 = log pi - log ref (unbiased, can be negative); k3 = (r - 1) - log r with r = ref/pi
    (unbiased and always >= 0, lower variance; Schulman's estimator).
    """
    if estimator == "k1":
        return np.subtract(logp, ref_logp)
    if estimator == "k3":
        log_ratio = np.subtract(ref_logp, logp)
        return np.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")


class KLPenalty:
    """``-coef * KL(policy || reference)`` on a response, summed over its tokens.

    The env cannot know the agent's probabilities, so it is given the policy model itself (the
    same object the agent trains) and a frozen reference; both are HF causal LMs sharing
    ``tokenizer``. Log-probs come from logits divided by ``temperature`` (the sampling
    temperature), as the sampled distribution is the tempered one.
    """

    def __init__(self, policy_model, reference_model, tokenizer, coef: float = 0.05,
                 estimator: str = "k1", temperature: float = 1.0):
        if policy_model is None or reference_model is None:
            raise ValueError("a KL penalty needs both policy_model and reference_model (HF causal LMs)")
        if estimator not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")
        self.policy, self.reference, self.tokenizer = policy_model, reference_model, tokenizer
        self.coef, self.estimator, self.temperature = float(coef), estimator, float(temperature)

    def token_logprobs(self, model, input_ids, response_mask):
        import torch

        with torch.inference_mode():
            # one unpadded sequence at a time (sequence_kl), so every position is attended
            logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[:, :-1].float()
            logp = torch.log_softmax(logits / self.temperature, dim=-1)
            taken = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return (taken * response_mask[:, 1:]).cpu().numpy(), response_mask[:, 1:].cpu().numpy()

    def sequence_kl(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Summed per-token KL estimate for each (prompt, response) token sequence."""
        import torch

        out = np.zeros(len(response_ids))
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            if not r:
                continue
            ids = torch.tensor([list(p) + list(r)])
            mask = torch.zeros_like(ids, dtype=torch.float32)
            mask[0, len(p):] = 1.0
            logp, m = self.token_logprobs(self.policy, ids, mask)
            ref, _ = self.token_logprobs(self.reference, ids, mask)
            out[i] = float((kl_estimate(logp, ref, self.estimator) * m).sum())
        return out

    def texts_kl(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        tok = self.tokenizer
        return self.sequence_kl([tok(p)["input_ids"] for p in prompts],
                                [tok(r)["input_ids"] for r in responses])


class SafetyPenalty:
    """``-coef * unsafe`` where ``unsafe`` in [0, 1] comes from a safety check
    (:mod:`rlhf_gym.rewards.safety`): the profanity classifier's probability by default,
    ``"blocklist"``, ``"classifier+blocklist"``, or any batched callable
    ``check(prompts, responses, references)``, checked here when the penalty is built."""

    def __init__(self, coef: float = 1.0, check: Any = None):
        from rlhf_gym.rewards.safety import load_safety_check

        self.coef = float(coef)
        self.check = load_safety_check(check)
        self.threshold = float(getattr(self.check, "threshold", 0.5))

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 references: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        from rlhf_gym.rewards.safety import _unit_scores

        scores = self.check(list(prompts), list(responses), references)
        return _unit_scores(scores, len(responses), getattr(self.check, "name", "safety check"))


class EnvReward:
    """score - KL penalty - safety penalty, with every component returned for ``info``."""

    def __init__(self, reward_model: RewardModel, kl: KLPenalty | None = None, safety: SafetyPenalty | None = None):
        self.reward_model = as_reward_model(reward_model)
        self.kl, self.safety = kl, safety

    def __call__(self, prompts, responses, references, kl_values: np.ndarray | None = None):
        score = self.reward_model(list(prompts), list(responses), [list(r) for r in references])
        total = score.copy()
        components = {"score": score}
        if self.kl is not None:
            kl = kl_values if kl_values is not None else self.kl.texts_kl(prompts, responses)
            components["kl"] = kl
            components["kl_penalty"] = -self.kl.coef * kl
            total += components["kl_penalty"]
        if self.safety is not None:
            unsafe = self.safety(prompts, responses, references)
            components["unsafe"] = unsafe
            components["unsafe_flagged"] = (unsafe >= self.safety.threshold).astype(np.float64)
            components["safety_penalty"] = -self.safety.coef * unsafe
            total += components["safety_penalty"]
        return total, components
