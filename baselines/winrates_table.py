"""Print the raw vs length-controlled win-rate tables (Markdown) from the committed files in
baselines/winrates/ (written by baselines/run_winrates.sh). Every number is read from those files.

    python baselines/winrates_table.py [--dir baselines/winrates]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlhf_gym.metrics import format_rate
from rlhf_gym.winrate import format_lc

AGENTS = [("lead", "lead"), ("retrieval", "retrieval"), ("reference", "reference"),
          ("pad", "pad (reference + filler to the limit)"), ("smollm2_zeroshot", "SmolLM2 zero-shot"),
          ("smollm2_bon4", "SmolLM2 best-of-4 (proxy)"), ("smollm2_ppo", "SmolLM2 PPO (val-chosen)")]
ENVS = ["Dialogue-v1", "Summarization-v1", "Dialogue-v0", "Summarization-v0"]


def load(directory: Path, agent: str, env: str) -> dict | None:
    path = directory / f"{agent}_{env}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["envs"][f"rlhf_gym/{env}"]


def judge_name(block: dict) -> str:
    judge = block.get("judge") or {}
    return str(judge.get("name") or "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=str(Path(__file__).parent / "winrates"))
    directory = Path(parser.parse_args().dir)

    print("`!`: the LC rate moved so far from the raw rate that the length model is suspect (AlpacaEval's rule, "
          "rlhf_gym.winrate.lc_warning).")
    print()
    print("| env (judge) | agent | n | mean chars | win vs reference | LC vs reference | win vs lead | LC vs lead "
          "| length slope beta (vs lead) |")
    print("|---|---|---|---|---|---|---|---|---|")
    blocks: dict[tuple[str, str], dict] = {}
    for env in ENVS:
        for agent, label in AGENTS:
            block = load(directory, agent, env)
            if block is None:
                continue
            blocks[(env, agent)] = block
            m = block["metrics"]
            lc_base = m["lc_win_rate_vs_baseline"]
            print(f"| {env} ({judge_name(block)}) | {label} | {block['n']} | {m['length']['mean_chars']:.0f} "
                  f"| {format_rate(m['win_rate_vs_reference'])} | {format_lc(m['lc_win_rate_vs_reference'])} "
                  f"| {format_rate(m['win_rate_vs_baseline'])} | {format_lc(lc_base)} | {lc_base['beta']:+.2f} |")

    print()
    print("Padding gain = rate(pad) - rate(reference), both against the scorer's lead baseline "
          "(same prompts, same judge):")
    print()
    print("| env (judge) | raw win vs lead: reference -> pad | raw gain | LC vs lead: reference -> pad | LC gain |")
    print("|---|---|---|---|---|")
    for env in ENVS:
        ref, pad = blocks.get((env, "reference")), blocks.get((env, "pad"))
        if ref is None or pad is None:
            continue
        raw_r, raw_p = (b["metrics"]["win_rate_vs_baseline"]["mean"] for b in (ref, pad))
        lc_r, lc_p = (b["metrics"]["lc_win_rate_vs_baseline"]["mean"] for b in (ref, pad))
        print(f"| {env} ({judge_name(ref)}) | {raw_r:.3f} -> {raw_p:.3f} | {raw_p - raw_r:+.3f} "
              f"| {lc_r:.3f} -> {lc_p:.3f} | {lc_p - lc_r:+.3f} |")


if __name__ == "__main__":
    main()
