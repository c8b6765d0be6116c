"""Unsafe-output rates on the test split of every task: the human references, the lead and
retrieval agents, and the committed model outputs (SmolLM2 zero-shot / best-of-4 / PPO, the small
SFT models), under the default safety check (the profanity classifier, flagged at p >= 0.5) and
the blocklist. Also the flagged/passed counts on the hand-written replies of tests/data.

    python baselines/safety_rates.py --out baselines/smollm2/safety_rates.json

Lexical checks only: 123 s on 2 shared cores, nearly all of it the retrieval agent's index.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = {  # results files whose generations are model outputs on the test split
    "Dialogue": ["baselines/smollm2/zeroshot_dialogue.json", "baselines/smollm2/bon4_dialogue.json",
                 "baselines/smollm2/ppo_dialogue_test.json", "baselines/results/sft_dialogue.json"],
    "Summarization": ["baselines/smollm2/zeroshot_summarization.json", "baselines/smollm2/bon4_summarization.json",
                      "baselines/results/sft_summarization.json"],
    "Translation": ["baselines/results/sft_translation.json"],
}


def main(argv=None) -> int:
    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import generate, list_env_ids
    from rlhf_gym.rewards.safety import flagged, load_safety_check, unsafe_rate
    from rlhf_gym.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    started = time.time()
    checks = {name: load_safety_check(name) for name in ("classifier", "blocklist")}
    out: dict = {"checks": {k: {"name": c.name, "threshold": c.threshold} for k, c in checks.items()}, "envs": {}}

    replies = [json.loads(line) for line in (ROOT / "tests/data/safety_replies.jsonl").read_text().splitlines()]
    out["written_replies"] = {}
    for name, check in checks.items():
        row = {}
        for label in ("abusive", "benign"):
            texts = [r["text"] for r in replies if r["label"] == label]
            flags = flagged(check, check([""] * len(texts), texts, None))
            row[label] = {"n": len(texts), "flagged": int(flags.sum()), "passed": int((~flags).sum())}
        out["written_replies"][name] = row
        print(f"written replies, {name}: abusive flagged {row['abusive']['flagged']}/{row['abusive']['n']}, "
              f"benign passed {row['benign']['passed']}/{row['benign']['n']}")

    for env_id in list_env_ids():
        task = get_task(env_id)
        examples = task.examples("test")
        prompts = [ex.prompt for ex in examples]
        refs = [list(ex.references) for ex in examples]
        systems = {"reference": [r[0] for r in refs]}
        for spec in ("lead", "retrieval"):
            systems[spec] = [p["prediction"] for p in generate(make_agent(spec, task), examples, 64, spec, False)]
        for path in COMMITTED.get(task.name, []):
            block = next(iter(json.loads((ROOT / path).read_text())["envs"].values()))
            systems[Path(path).stem] = {g["id"]: g["prediction"] for g in block["generations"]}
        rows = {}
        for system, texts in systems.items():
            if isinstance(texts, dict):  # committed outputs: their own examples (often the first 100)
                ids = [ex.id for ex in examples if ex.id in texts]
                p = [ex.prompt for ex in examples if ex.id in texts]
                texts = [texts[i] for i in ids]
            else:
                p = prompts
            rows[system] = {name: unsafe_rate(check, p, texts) for name, check in checks.items()}
            c, b = rows[system]["classifier"], rows[system]["blocklist"]
            print(f"{task.env_id:28s} {system:28s} n={c['n']:5d} classifier {c['count']:4d} ({c['mean']:.3f} "
                  f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}])  blocklist {b['count']:4d} ({b['mean']:.3f})")
        out["envs"][task.env_id] = rows
    out["seconds"] = round(time.time() - started, 1)
    print(f"{out['seconds']} s")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
