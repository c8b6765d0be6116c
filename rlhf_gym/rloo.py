"""REINFORCE leave-one-out (Ahmadian et al. 2024), sharing PPO's rollout and loss code.

For each prompt, k responses are sampled; a response's advantage is its KL-penalised sequence
reward minus the mean reward of the other k-1 responses to the same prompt. That baseline needs
no value model, so RLOO keeps two model copies (policy, reference) where PPO keeps three. The
update is PPO's clipped surrogate with the sequence advantage at every token (as in TRL).

    rlhf-gym train rloo --env rlhf_gym/Translation-v0 --policy baselines/sft/translation --out runs/rloo
"""

from __future__ import annotations

import torch

from rlhf_gym.ppo.config import PPOConfig, make_config


def rloo_advantages(seq_rewards: torch.Tensor, k: int, whiten: bool = False) -> torch.Tensor:
    """Leave-one-out advantages for rewards laid out prompt-major ([p0s0, p0s1, ..., p1s0, ...]).

    ``whiten`` normalises them over SEQUENCES (as TRL does); whitening after broadcasting to
    tokens would weigh every token equally, so longer responses would count more."""
    if seq_rewards.numel() % k:
        raise ValueError(f"{seq_rewards.numel()} rewards are not a multiple of k={k}")
    grouped = seq_rewards.view(-1, k)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
    advantages = (grouped - baseline).reshape(-1)
    if whiten:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return advantages


def train_rloo(cfg: PPOConfig | None = None, **kwargs):
    from rlhf_gym.ppo.trainer import train

    cfg = cfg or make_config(kwargs.pop("preset", "cpu-tiny"), algo="rloo", **kwargs)
    if cfg.algo != "rloo":
        raise ValueError("train_rloo needs algo='rloo'")
    return train(cfg)
