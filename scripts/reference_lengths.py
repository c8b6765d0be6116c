"""Are the human references valid actions? Per env and split: examples, the env's response limit,
references over it and the longest one; with ``--padding``, what the env's training reward gives
the reference against degenerate padding up to the limit (does a wider limit open a reward hack?).

    python scripts/reference_lengths.py --envs rlhf_gym/Dialogue-v1 rlhf_gym/Dialogue-v2
    python scripts/reference_lengths.py --envs rlhf_gym/Dialogue-v2 --padding --limit 60
    python scripts/reference_lengths.py --envs rlhf_gym/Dialogue-v1 rlhf_gym/Dialogue-v2 --multi-turn

The tables and counts in envs/dialogue.md come from these commands.
"""

from __future__ import annotations

import argparse

import numpy as np

from rlhf_gym.tasks import get_task, list_tasks


def length_table(env_ids: list[str]) -> None:
    print("| env | split | examples | limit | references over it | longest |")
    print("|---|---|---|---|---|---|")
    for env_id in env_ids:
        task = get_task(env_id)
        for split in ("train", "validation", "test"):
            lengths = [len(r) for ex in task.examples(split) for r in ex.references]
            over = sum(n > task.max_response_chars for n in lengths)
            print(f"| {env_id} | {split} | {len(lengths):,} | {task.max_response_chars} | {over} | {max(lengths):,} |")


def padding_table(env_id: str, limit: int) -> None:
    task = get_task(env_id)
    reward = task.reward_model()
    examples = task.examples("test")[:limit]
    prompts, refs = [ex.prompt for ex in examples], [ex.references for ex in examples]
    human = [ex.references[0] for ex in examples]
    base = np.asarray(reward(prompts, human, refs))
    rows = {"the human reply": human}
    for n in sorted({300, task.max_response_chars}):
        rows[f"'lol ' repeated to {n} characters"] = [("lol " * n)[:n] for _ in examples]
        rows[f"the reply + ' you know' x k, to {n}"] = [(h + " you know" * n)[:max(n, len(h))] for h in human]
        rows[f"the reply repeated to {n}"] = [((h + " ") * n)[:max(n, len(h))] for h in human]
    print(f"\n{env_id} training reward ({reward.name}), first {len(examples)} test prompts\n")
    print("| response | mean reward | share scored above the human reply |")
    print("|---|---|---|")
    for label, texts in rows.items():
        scores = np.asarray(reward(prompts, texts, refs))
        print(f"| {label} | {scores.mean():+.3f} | {np.mean(scores > base):.2f} |")


def multi_turn_counts(env_id: str, split: str = "train") -> None:
    """Agent turns of every multi-turn episode of ``split``, and how many ask for a reply whose
    human reference is over the limit."""
    import gymnasium as gym

    from rlhf_gym.rewards.base import MetricReward

    name, version = env_id.rsplit("-v", 1)
    env = gym.make(f"{name}-MultiTurn-v{version}", split=split, reward_model=MetricReward("chrf")).unwrapped
    turns = over = 0
    for index in range(len(env.examples)):
        env.reset(options={"index": index})
        terminated = False
        while not terminated:
            turns += 1
            over += len(env._references()[0]) > env.task.max_response_chars
            terminated = env.step("ok")[2]
    print(f"{name}-MultiTurn-v{version} {split}: {len(env.examples):,} episodes, {turns:,} agent turns, "
          f"{over} with a reference over {env.task.max_response_chars} characters")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", nargs="+", default=[t.env_id for t in list_tasks(latest_only=True)])
    ap.add_argument("--padding", action="store_true", help="also score padded replies with the training reward")
    ap.add_argument("--limit", type=int, default=60, help="test prompts for --padding")
    ap.add_argument("--multi-turn", action="store_true", help="count multi-turn agent turns with an overlong reference")
    args = ap.parse_args()
    if args.multi_turn:
        for env_id in args.envs:
            multi_turn_counts(env_id)
    elif args.padding:
        for env_id in args.envs:
            padding_table(env_id, args.limit)
    else:
        length_table(args.envs)


if __name__ == "__main__":
    main()
