"""Native PPO (and RLOO) for text policies: config, rollout, losses, trainer."""

from rlhf_gym.ppo.config import PRESETS, PPOConfig, make_config

__all__ = ["PPOConfig", "PRESETS", "make_config"]
