"""Print the SmolLM2 tables of baselines/README.md from the committed result files.

    python baselines/smollm2_table.py
"""

import json
from pathlib import Path

from rlhf_gym.metrics import format_rate

R = Path(__file__).resolve().parent / "smollm2"


def row(label: str, path: Path, env: str) -> str | None:
    if not path.exists():
        return None
    block = json.loads(path.read_text())["envs"][env]
    m = block["metrics"]
    vs = m.get("win_rate_vs_agent")
    vs_text = format_rate(vs)  # interval rounded outwards: the mean is always inside it
    return (f"| {env.split('/')[1]} | {label} | {block['n']} | {m['bleu']:.2f} | {m['chrf']:.2f} | {m['rouge1']:.2f} | "
            f"{m['rouge2']:.2f} | {m['rougeL']:.2f} | {m['reward_mean']:.3f} | {m['judge_mean']:.3f} | {vs_text} | "
            f"{m['length']['median_words']:g} | {m['most_repeated_share']['share']:.2f} |")


def main() -> None:
    print("| env | policy | n | BLEU | chrF | R-1 | R-2 | R-L | proxy reward | gold mean | gold win vs SmolLM2 zero-shot [95% CI] | median words | most-repeated share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task in ("dialogue", "summarization"):
        env = f"rlhf_gym/{task.capitalize()}-v1"
        for label, name in (("SmolLM2 zero-shot (greedy)", f"zeroshot_{task}.json"),
                            ("best-of-4 (T=0.7, proxy-picked)", f"bon4_vs_smollm2_{task}.json"),
                            ("PPO LoRA, val-chosen snapshot (greedy)", f"ppo_vs_smollm2_{task}.json"),
                            ("PPO LoRA on a GPU, 64/iter, val-chosen (greedy)", f"ppo_gpu_vs_smollm2_{task}.json")):
            line = row(label, R / name, env)
            if line is None and name.startswith("bon4_vs"):
                line = row(label, R / f"bon4_{task}.json", env)
            if line:
                print(line)
    # the chosen GPU policy and its start on the whole Dialogue-v1 test split (219), after the n=100 run above
    for label, name in (("SmolLM2 zero-shot (greedy), whole test split", "zeroshot_dialogue_full.json"),
                        ("PPO LoRA on a GPU, val-chosen (greedy), whole test split",
                         "ppo_gpu_vs_smollm2_dialogue_full.json")):
        line = row(label, R / name, "rlhf_gym/Dialogue-v1")
        if line:
            print(line)
    for name in ("ppo_dialogue_selection.json", "ppo_gpu_dialogue_selection.json"):
        sel = R / name
        if not sel.exists():
            continue
        print(f"\n{name}:")
        for r in json.loads(sel.read_text())["rows"]:
            kl = "-" if r["kl"] is None else f"{r['kl']:.3f}"  # the last snapshot has no later logged KL
            print(f"| {r['iteration']} | {kl} | {r['proxy_mean']:.3f} | {r['gold_mean']:.3f} | "
                  f"{r['median_words']:g} | {r['most_repeated_share']:.2f} |")
    timing = R / "gpu" / "gpu_preset_timing.json"
    if timing.exists():
        t = json.loads(timing.read_text())
        print(f"\n{t['device']}")
        print("| mode | batch | tokens/s | samples/s | rollout s | update s | iteration s | peak GPU memory (MiB) |")
        print("|---|---|---|---|---|---|---|---|")
        for mode, run in t["runs"].items():
            r = run["iterations"][-1]
            print(f"| {mode} | {run['batch_size']} | {r['tokens_per_second']:.0f} | {r['samples_per_second']:.1f} | "
                  f"{r['time_rollout']:.2f} | {r['time_update']:.2f} | {r['time_iteration']:.2f} | {r['peak_memory_mb']:.0f} |")


if __name__ == "__main__":
    main()
