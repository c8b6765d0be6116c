"""Print the raw vs length-controlled win-rate tables (Markdown) from the committed files in
baselines/winrates/ (written by baselines/run_winrates.sh). Every number is read from those files
(the e5-judge rates against lead and the padding gains are computed here from their per-prompt
judge scores, with rlhf_gym.winrate).

    python baselines/winrates_table.py [--dir baselines/winrates]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlhf_gym.metrics import format_rate, preferences
from rlhf_gym.winrate import compare, format_lc, paired_gain

AGENTS = [("lead", "lead"), ("retrieval", "retrieval"), ("reference", "reference"),
          ("pad", "pad (reference + filler to the limit)"), ("smollm2_zeroshot", "SmolLM2 zero-shot"),
          ("smollm2_bon4", "SmolLM2 best-of-4 (proxy)"), ("smollm2_ppo", "SmolLM2 PPO (val-chosen)")]
ENVS = ["Dialogue-v1", "Summarization-v1", "Dialogue-v0", "Summarization-v0"]
# The newest envs (reference-free e5 judge against the reference, gold judge against lead): one
# file per agent, {agent}_newest.json, holding every env it was run on (Translation-v2, run
# later: {agent}_translation_newest.json).
NEWEST_AGENTS = [("lead", "lead"), ("reference", "reference"), ("pad", "pad (reference + fixed filler to the limit)"),
                 ("padsrc", "padsrc (reference + 0-3 source sentences)"),
                 ("padsrc_lead", "padsrc:lead (lead-1 + 0-3 more source sentences)")]
NEWEST_ENVS = ["Summarization-v2", "Dialogue-v3", "Translation-v2"]
# (padded agent, its unpadded base): the padding gain is rate(padded) - rate(base), same opponent
PADDINGS = [("pad", "reference"), ("padsrc", "reference"), ("padsrc_lead", "lead")]


def load(directory: Path, agent: str, env: str) -> dict | None:
    path = directory / f"{agent}_{env}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["envs"][f"rlhf_gym/{env}"]


def load_newest(directory: Path, agent: str, env: str) -> dict | None:
    """``env``'s block from {agent}_newest.json (several envs) or {agent}_{task}_newest.json (one)."""
    task = env.split("-")[0].lower()
    for path in (directory / f"{agent}_newest.json", directory / f"{agent}_{task}_newest.json"):
        if path.exists():
            block = json.loads(path.read_text(encoding="utf-8"))["envs"].get(f"rlhf_gym/{env}")
            if block is not None:
                return block
    return None


def comparisons(block: dict, lead: dict | None) -> dict[str, tuple[list, list, list, list]]:
    """Per judge and opponent: (agent scores, opponent scores, agent texts, opponent texts)."""
    gens = block["generations"]
    texts = [g["prediction"] for g in gens]
    out = {"e5 vs reference": ([g["refjudge_score"] for g in gens], [g["refjudge_reference_score"] for g in gens],
                               texts, [g["references"][0] for g in gens]),
           "gold vs lead": ([g["judge_score"] for g in gens], [g["baseline_judge_score"] for g in gens],
                            texts, [g["baseline_prediction"] for g in gens])}
    if lead is not None:  # the e5 judge on lead's outputs: from the lead agent's own bench file
        lead_gens = {g["id"]: g for g in lead["generations"]}
        missing = [g["id"] for g in gens if g["id"] not in lead_gens]
        if missing:
            raise ValueError(f"the lead file lacks examples {missing[:3]}...: run both on the same --limit")
        for g in gens:
            if lead_gens[g["id"]]["prediction"] != g["baseline_prediction"]:
                raise ValueError(f"lead's prediction for {g['id']} differs from the scorer's baseline")
        out["e5 vs lead"] = ([g["refjudge_score"] for g in gens], [lead_gens[g["id"]]["refjudge_score"] for g in gens],
                             texts, [lead_gens[g["id"]]["prediction"] for g in gens])
    return out


def newest_tables(directory: Path) -> None:
    judges = ("e5 vs reference", "e5 vs lead", "gold vs lead")
    print()
    print("Newest envs: the win rate against the reference is judged by the reference-free e5 judge (as `bench` "
          "reports it), against lead by the gold judge (`bench`) and by the e5 judge (computed here from the two "
          "bench files' per-prompt e5 scores).")
    print()
    print("| env | agent | n | mean chars | e5: win vs reference | e5: LC vs reference | e5: win vs lead "
          "| e5: LC vs lead | gold: win vs lead | gold: LC vs lead |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rates: dict[tuple[str, str, str], tuple] = {}
    for env in NEWEST_ENVS:
        lead = load_newest(directory, "lead", env)
        for agent, label in NEWEST_AGENTS:
            block = load_newest(directory, agent, env)
            if block is None:
                continue
            cells = []
            for judge, (sa, sb, ta, tb) in comparisons(block, lead).items():
                raw, lc = compare(sa, sb, ta, tb)
                rates[(env, agent, judge)] = (preferences(sa, sb), [len(a) - len(b) for a, b in zip(ta, tb)])
                cells.append((judge, raw, lc))
            by_judge = {j: (r, lc) for j, r, lc in cells}
            row = [f"{format_rate(by_judge[j][0])} | {format_lc(by_judge[j][1])}" if j in by_judge else "- | -"
                   for j in judges]
            print(f"| {env} | {label} | {block['n']} | {block['metrics']['length']['mean_chars']:.0f} | "
                  + " | ".join(row) + " |")
    print()
    print("Padding gain = rate(padded) - rate(its unpadded base), same opponent, same prompts; 95% intervals "
          "from one paired bootstrap over prompts (rlhf_gym.winrate.paired_gain; LC refit on every resample):")
    print()
    print("| env | judge, opponent | padded (base) | raw: base -> padded | raw gain [95% CI] "
          "| LC: base -> padded | LC gain [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    for env in NEWEST_ENVS:
        for judge in judges:
            for padded, base in PADDINGS:
                a, b = rates.get((env, padded, judge)), rates.get((env, base, judge))
                if a is None or b is None:
                    continue
                g = paired_gain(a[0], a[1], b[0], b[1])
                raw_a, raw_b = sum(a[0]) / len(a[0]), sum(b[0]) / len(b[0])
                lc_a, lc_b = (compare_lc(x) for x in (a, b))
                print(f"| {env} | {judge} | {padded} ({base}) | {raw_b:.3f} -> {raw_a:.3f} | {g['raw_gain']:+.3f} "
                      f"[{g['raw_gain_ci'][0]:+.3f}, {g['raw_gain_ci'][1]:+.3f}] | {lc_b:.3f} -> {lc_a:.3f} | "
                      f"{g['lc_gain']:+.3f} [{g['lc_gain_ci'][0]:+.3f}, {g['lc_gain_ci'][1]:+.3f}] |")


def compare_lc(prefs_delta) -> float:
    from rlhf_gym.winrate import fit_length_logistic

    return fit_length_logistic(*prefs_delta)["lc"]


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
    newest_tables(directory)


if __name__ == "__main__":
    main()
