"""Before/after table of a DialogueMemory (v0 or v1) policy change (e.g. RLOO from SmolLM2), from two bench files.

    python baselines/memory_rl_compare.py BEFORE.json AFTER.json [--md OUT.md]
    python baselines/memory_rl_compare.py --select VALIDATION.json ...   # prints the chosen agent spec

Both files must hold the same episodes (same split and limit). Reported for each: memory accuracy
over probe turns (95% Wilson CI) and the Dialogue-v1 reward model's mean score on ordinary
(non-probe) turns (95% bootstrap CI), both as `bench` computed them; and the PAIRED change: per probe
(same episode, same turn) after minus before, per ordinary turn likewise, with a bootstrap CI and
the exact sign test (`rlhf_gym.metrics.paired_gap_stats`). Every number is read from the files.

It also counts COPIES, the two ways RL has gamed the memory score (envs/DialogueMemory.md): replies
that contain the fact-store line's opening or a sentence of the rule-based fact store (``rlhf_gym.memory.extract``, rebuilt from the
partner's turns so far, as the ``memory:N`` prompt shows it) and replies that contain a run of
COPY_WORDS consecutive words of one of the partner's turns so far; over probe replies, correct
probe replies and ordinary replies.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from rlhf_gym.memory.extract import extract_facts
from rlhf_gym.metrics import format_rate, paired_gap_stats

ENVS = ("rlhf_gym/DialogueMemory-v1", "rlhf_gym/DialogueMemory-v0")  # the first one a file holds is read
STORE_HEADER = "what a has told you so far"  # the fact-store line's opening (rlhf_gym.memory.view), as _words gives it
COPY_WORDS = 6  # a run this long of the partner's words is a copy, not a paraphrase (planted sentences are 6-15 words)


def block(path: str) -> tuple[str, dict]:
    results = json.loads(Path(path).read_text(encoding="utf-8"))
    env = next((e for e in ENVS if e in results.get("envs", {})), None)
    if env is None:
        raise ValueError(f"{path} has no DialogueMemory block ({' or '.join(ENVS)})")
    return results["agent"]["spec"], results["envs"][env]


def paired(before: dict, after: dict, probes: bool) -> dict:
    a = {(r["id"], r["turn"]): r for r in after["generations"] if r["is_probe"] == probes}
    b = {(r["id"], r["turn"]): r for r in before["generations"] if r["is_probe"] == probes}
    if set(a) != set(b):
        raise ValueError("the two files hold different episodes or turns; bench both with the same --split/--limit")
    def value(r):
        return float(r["memory_correct"] == 1.0) if probes else r["score"]
    return paired_gap_stats([value(a[k]) - value(b[k]) for k in sorted(a)])


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def copies(block_: dict) -> dict[str, dict[str, int]]:
    """Counts of replies that copy a fact-store sentence or COPY_WORDS+ consecutive partner words,
    per kind of reply (``probe``, ``correct_probe``, ``ordinary``), with the totals (``n``)."""
    by_episode: dict[str, list[dict]] = {}
    for r in block_["generations"]:
        by_episode.setdefault(r["id"], []).append(r)
    counts = {kind: {"n": 0, "store": 0, "partner": 0} for kind in ("probe", "correct_probe", "ordinary")}
    for records in by_episode.values():
        records = sorted(records, key=lambda r: r["turn"])
        for i, r in enumerate(records):
            partner = [p["partner"] for p in records[: i + 1]]
            reply = " ".join(_words(r["prediction"]))
            store = [" ".join(_words(f.sentence())) for f in extract_facts(partner).values()]
            runs = {" ".join(w[j:j + COPY_WORDS]) for p in partner for w in [_words(p)]
                    for j in range(len(w) - COPY_WORDS + 1)}
            kinds = ["probe"] + (["correct_probe"] if r["memory_correct"] == 1.0 else []) if r["is_probe"] else ["ordinary"]
            for kind in kinds:
                counts[kind]["n"] += 1
                counts[kind]["store"] += STORE_HEADER in reply or any(s and s in reply for s in store)
                counts[kind]["partner"] += any(run in reply for run in runs)
    return counts


def correct_probe_sources(block_: dict) -> list[dict]:
    """Each correct probe reply with its distance and how many turns back lie the partner's turns it
    copies COPY_WORDS+ consecutive words of (0 = the turn being answered; [] = no copy)."""
    by_episode: dict[str, list[dict]] = {}
    for r in block_["generations"]:
        by_episode.setdefault(r["id"], []).append(r)
    rows = []
    for records in by_episode.values():
        records = sorted(records, key=lambda r: r["turn"])
        for i, r in enumerate(records):
            if not (r["is_probe"] and r["memory_correct"] == 1.0):
                continue
            reply = " ".join(_words(r["prediction"]))
            back = [i - j for j, p in enumerate(records[: i + 1]) for w in [_words(p["partner"])]
                    if any(" ".join(w[k:k + COPY_WORDS]) in reply for k in range(len(w) - COPY_WORDS + 1))]
            rows.append({"id": r["id"], "turn": r["turn"], "answer": r["answer"], "distance": r["distance"],
                         "copied_turns_back": back, "reply": r["prediction"]})
    return rows


def copy_line(spec: str, block_: dict) -> str:
    c = copies(block_)
    part = lambda key: ", ".join(f"{c[k][key]}/{c[k]['n']} {label}" for k, label in  # noqa: E731
                                 (("probe", "probe"), ("correct_probe", "correct probe"), ("ordinary", "ordinary")))
    return (f"copies in {spec}: a fact-store sentence in {part('store')} replies; "
            f"{COPY_WORDS}+ consecutive partner words in {part('partner')} replies")


def gap(stats: dict, digits: int = 3) -> str:
    return (f"{stats['mean_gap']:+.{digits}f} [{stats['mean_gap_ci_low']:+.{digits}f}, "
            f"{stats['mean_gap_ci_high']:+.{digits}f}] (+{stats['n_positive']}/-{stats['n_negative']}, "
            f"sign test p={stats['sign_test_p']:.2g}, n={stats['n']})")


def select(paths: list[str]) -> str:
    """The agent spec with the highest memory accuracy among bench files of VALIDATION episodes
    (ties: the first given, so list the base policy first). Test files are refused."""
    best = None
    for path in paths:
        spec, b = block(path)
        if b["split"] != "validation":
            raise ValueError(f"{path}: checkpoints are chosen on validation episodes, this file is {b['split']!r}")
        acc = b["metrics"]["memory_accuracy"]["mean"]
        if best is None or acc > best[0]:
            best = (acc, spec)
    return best[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="BEFORE AFTER, or with --select the validation files")
    parser.add_argument("--select", action="store_true", help="print the validation-chosen agent spec")
    parser.add_argument("--md", help="also write the table here")
    parser.add_argument("--list-correct", action="store_true",
                        help="also list each correct probe reply: distance, partner turns it copies (turns back)")
    args = parser.parse_args(argv)
    if args.select:
        print(select(args.files))
        return 0
    if len(args.files) != 2:
        parser.error("give BEFORE.json AFTER.json")
    (spec_b, before), (spec_a, after) = block(args.files[0]), block(args.files[1])
    if (before["split"], before["n"]) != (after["split"], after["n"]):
        raise ValueError(f"different episodes: {before['split']}/{before['n']} vs {after['split']}/{after['n']}")
    if before["env_id"] != after["env_id"]:
        raise ValueError(f"different memory rules: {before['env_id']} vs {after['env_id']}; compare like with like")
    title = (f"{before['env_id'].split('/')[-1]}, split {before['split']}, {before['n']} episodes, "
             f"{before['n_probes']} probes, {before['n_turns'] - before['n_probes']} ordinary turns")
    lines = [title, "",
             "| policy | memory acc [95% Wilson] | RM score, ordinary turns [95% bootstrap] |", "|---|---|---|"]
    for spec, b in ((spec_b, before), (spec_a, after)):
        m = b["metrics"]
        lines.append(f"| {spec} | {format_rate(m['memory_accuracy'], digits=3)} | "
                     f"{format_rate(m['score_non_probe'], digits=2)} |")
    score_gap = gap(paired(before, after, False), 2)
    lines += ["", f"paired change in memory accuracy (per probe): {gap(paired(before, after, True))}",
              f"paired change in RM score (per ordinary turn, after its own history): {score_gap}", ""]
    lines += [copy_line(spec, b) for spec, b in ((spec_b, before), (spec_a, after))]
    if args.list_correct:
        for spec, b in ((spec_b, before), (spec_a, after)):
            lines += ["", f"correct probes of {spec} (distance; partner turns copied, turns back; reply):"]
            lines += [f"- d={row['distance']} copied={row['copied_turns_back']} {row['answer']!r}: "
                      f"{' '.join(row['reply'].split())[:120]!r}" for row in correct_probe_sources(b)]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.md:
        Path(args.md).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
