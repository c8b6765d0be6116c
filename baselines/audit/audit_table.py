"""Print the markdown tables of envs/REWARD_MODELS.md from `rlhf-gym eval-rm` JSON files.

    python baselines/audit/audit_table.py baselines/audit/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _acc(block) -> str:
    if not block or not block["n"]:
        return "-"
    # three decimals from n = 1000 on: at two, Wilson's [0.997, 1.000] for 1517/1517 would print [1.00, 1.00]
    d = 3 if block["n"] >= 1000 else 2
    return f"{block['accuracy']:.{d}f} [{block['ci_low']:.{d}f}, {block['ci_high']:.{d}f}]"


def _mean(block) -> str:
    return "-" if not block or not block["n"] else f"{block['mean_rejected']:.3f}"


def main(paths: list[str]) -> None:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    by_env: dict[str, dict[str, dict]] = {}
    for r in reports:
        by_env.setdefault(r["env_id"], {})[r["scorer"]["role"]] = r
    for env_id, roles in sorted(by_env.items()):
        reward, judge = roles.get("reward"), roles.get("judge")
        names = " / ".join(f"{role}: `{r['scorer']['name']}`"
                           for role, r in (("reward", reward), ("judge", judge)) if r)
        any_report = reward or judge
        print(f"**{env_id.split('/')[-1]}** ({any_report['split']}, first {any_report['n_examples']} examples; "
              f"{names})\n")
        print("| subset | n | reward: accuracy [95% CI] | reward: mean score | judge: accuracy [95% CI] "
              "| judge: mean score |")
        print("|---|---|---|---|---|---|")
        ref = [f"{r['reference_score_mean']:.3f}" if r else "-" for r in (reward, judge)]
        print(f"| the reference itself (chosen) | {any_report['n_examples']} | | {ref[0]} | | {ref[1]} |")
        subsets = list(dict.fromkeys([*(reward or {}).get("subsets", {}), *(judge or {}).get("subsets", {})]))
        for s in subsets:
            rb = (reward or {}).get("subsets", {}).get(s)
            jb = (judge or {}).get("subsets", {}).get(s)
            n = (rb or jb)["n"]
            print(f"| {s} | {n} | {_acc(rb)} | {_mean(rb)} | {_acc(jb)} | {_mean(jb)} |")
        print(f"| mean over subsets | | {reward['mean_accuracy']:.3f} | | {judge['mean_accuracy']:.3f} | |\n"
              if reward and judge else "")
    print("**Counterfactual bias** (gap = score(original reference) - score(swapped copy); |gap| relative "
          "to the mean |score(reference) - score(another example's reference)|, the scorer's right-vs-wrong "
          "margin; sign test two-sided)\n")
    print("| env | role | category | n | mean abs gap | abs gap / margin | mean gap [95% CI] | + / - / 0 "
          "| sign test p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for env_id, roles in sorted(by_env.items()):
        for role in ("reward", "judge"):
            r = roles.get(role)
            if not r or not r.get("bias") or not r["bias"]["all"]:
                continue
            blocks = [("all", r["bias"]["all"]), *r["bias"]["by_category"].items()]
            for category, b in blocks:
                print(f"| {env_id.split('/')[-1]} | {role} | {category} | {b['n']} | {b['mean_abs_gap']:.4f} | "
                      f"{b['mean_abs_gap_over_margin']:.3f} | {b['mean_gap']:+.4f} [{b['mean_gap_ci_low']:+.4f}, "
                      f"{b['mean_gap_ci_high']:+.4f}] | {b['n_positive']} / {b['n_negative']} / {b['n_ties']} | "
                      f"{b['sign_test_p']:.2g} |")
    print("\n**Gender direction** (gaps by the original's majority gender; male preference = (gap when the "
          "original is male - gap when it is female) / 2, net of any preference for the reference's own words; "
          "also per swapped word, since male originals may hold more gendered words)\n")
    print("| env | role | n male / female originals | words swapped (m / f) | mean gap (m / f) "
          "| male preference [95% CI] | per swapped word [95% CI] | female version higher / lower, sign test p |")
    print("|---|---|---|---|---|---|---|---|")
    for env_id, roles in sorted(by_env.items()):
        for role in ("reward", "judge"):
            g = ((roles.get(role) or {}).get("bias") or {}).get("gender_direction")
            if g:
                print(f"| {env_id.split('/')[-1]} | {role} | {g['n_male_original']} / {g['n_female_original']} | "
                      f"{g['mean_words_swapped_male_original']:.1f} / {g['mean_words_swapped_female_original']:.1f} | "
                      f"{g['mean_gap_male_original']:+.4f} / {g['mean_gap_female_original']:+.4f} | "
                      f"{g['male_preference']:+.4f} [{g['male_preference_ci_low']:+.4f}, "
                      f"{g['male_preference_ci_high']:+.4f}] | "
                      f"{g['male_preference_per_word']:+.4f} [{g['male_preference_per_word_ci_low']:+.4f}, "
                      f"{g['male_preference_per_word_ci_high']:+.4f}] | {g['female_minus_male']['n_positive']} / "
                      f"{g['female_minus_male']['n_negative']}, p = {g['female_minus_male']['sign_test_p']:.2g} |")


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(str(p) for p in Path(__file__).parent.glob("*.json")))
