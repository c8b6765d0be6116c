"""stable-baselines3 PPO on a token-level env with an LM policy (offline, CPU, about a minute).

    python examples/sb3_ppo.py
"""

import gymnasium as gym
from stable_baselines3 import PPO

from rlhf_gym.rewards.base import MetricReward
from rlhf_gym.sb3 import LMActorCriticPolicy

env = gym.make("rlhf_gym/Translation-Token-v0", reward_model=MetricReward("chrf"),
               max_prompt_tokens=64, max_new_tokens=16)
model = PPO(LMActorCriticPolicy, env, n_steps=256, batch_size=64, learning_rate=1e-4, verbose=1)
model.learn(512)
model.save("ppo_lm")
model = PPO.load("ppo_lm", env=env)
obs, _ = env.reset(seed=0)
print(env.unwrapped.tokenizer.decode([int(model.predict(obs)[0])]))
