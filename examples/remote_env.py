"""Drive a served env with RemoteEnv, and check every step against the same env made in process.

    rlhf-gym serve-env --env rlhf_gym/Dialogue-v1 --port 8765 &
    python examples/remote_env.py --url http://127.0.0.1:8765 --episodes 100 --check

The agent is the task's ``lead`` baseline (echo the partner's last turn for dialogue), which acts
on the observation and info alone, so the client needs neither data nor reward model. With
``--check`` the env is also made here (``gymnasium.make`` with the server's env kwargs) and each
seeded reset and step is compared for exact equality: prompt, reward, terminated, truncated, info.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--check", action="store_true", help="compare every step with the env made in process")
    args = p.parse_args(argv)

    from rlhf_gym.agents import LeadAgent
    from rlhf_gym.remote import RemoteEnv

    remote = RemoteEnv(args.url)
    agent = LeadAgent(remote.server["kind"])
    local = None
    if args.check:
        import gymnasium as gym

        local = gym.make(remote.env_id, **remote.server["env_kwargs"])
    rewards, step_ms, mismatches = [], [], 0
    started = time.perf_counter()
    for seed in range(args.episodes):
        obs, info = remote.reset(seed=seed)
        [action] = agent.act([obs], [info])
        action = action[: remote.action_space.max_length]  # the env's length limit, as bench and the trainers cut
        t0 = time.perf_counter()
        result = remote.step(action)
        step_ms.append(1000 * (time.perf_counter() - t0))
        rewards.append(result[1])
        if local is not None:
            mismatches += (obs, info) != local.reset(seed=seed)
            mismatches += result != local.step(action)
    wall = time.perf_counter() - started
    remote.close()
    summary = {"env_id": remote.env_id, "url": args.url, "episodes": args.episodes,
               "mean_reward": statistics.fmean(rewards), "checked_in_process": args.check,
               "mismatches": mismatches if args.check else None,
               "step_ms_median": round(statistics.median(step_ms), 2), "episodes_per_s": round(args.episodes / wall, 1)}
    print(json.dumps(summary))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
