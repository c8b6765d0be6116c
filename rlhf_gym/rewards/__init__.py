"""Reward models: the interface, metric/callable/weighted rewards, learned MiniLM heads,
Hugging Face classifiers, the MPNet gold judge, reward spec strings (``load_reward``), preference
data and Bradley-Terry training.

The light pieces import eagerly; the torch-backed ones load on first use.
"""

from rlhf_gym.rewards.base import CallableReward, MetricReward, RewardModel, WeightedReward, as_reward_model
from rlhf_gym.rewards.penalties import EnvReward, KLPenalty, SafetyPenalty

_LAZY = {
    "EmbeddingRewardModel": "rlhf_gym.rewards.embedding",
    "SentenceEncoder": "rlhf_gym.rewards.embedding",
    "get_encoder": "rlhf_gym.rewards.embedding",
    "load_builtin_reward": "rlhf_gym.rewards.embedding",
    "informativeness": "rlhf_gym.rewards.embedding",
    "HFRewardModel": "rlhf_gym.rewards.hf",
    "load_reward": "rlhf_gym.rewards.spec",
    "describe_reward": "rlhf_gym.rewards.spec",
    "GoldJudge": "rlhf_gym.rewards.gold",
    "load_gold_judge": "rlhf_gym.rewards.gold",
    "builtin_pairs": "rlhf_gym.rewards.preferences",
    "policy_sample_pairs": "rlhf_gym.rewards.preferences",
    "read_preference_file": "rlhf_gym.rewards.preferences",
    "train_reward_model": "rlhf_gym.rewards.train",
    "load_safety_check": "rlhf_gym.rewards.safety",
}

__all__ = ["RewardModel", "CallableReward", "MetricReward", "WeightedReward", "as_reward_model", "EnvReward",
           "KLPenalty", "SafetyPenalty", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlhf_gym.rewards' has no attribute {name!r}")
