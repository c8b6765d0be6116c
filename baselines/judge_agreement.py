"""How the reference-free judges agree with the gold judge on pairs of model outputs, and what win
rates against the human reference they give.

For every prompt of the chosen split, all distinct outputs available for it are paired; a judge
agrees on a pair when it orders the two outputs as the gold judge (MPNet against the reference,
``rlhf_gym/rewards/gold.py``) does (pairs the gold judge ties are left out; a judge tie is a
disagreement; 95% CI: cluster bootstrap over prompts).

Outputs (all real model or agent text, none written for this check):
- test: the committed results files (SmolLM2 zero-shot / best-of-4 / PPO, the small v0 SFT / PPO /
  RLOO / best-of-4 models; ``prediction`` and ``vs_prediction`` alike) on the first 100 test
  examples; for translation, where only two models exist, also with the retrieval agent's output
  (real English verses of similar sources);
- validation (for choosing between judge variants, never test): the committed SmolLM2 samples of
  ``baselines/smollm2/proxy_data/{task}_val.jsonl`` (4 per prompt, 32 prompts); for translation the
  small SFT and PPO models and the retrieval agent on the first 100 validation examples.

    python baselines/judge_agreement.py --split test --out baselines/judges/agreement_test.json
    python baselines/judge_agreement.py --split validation --head e5=rlhf_gym/assets/... --head alt=/tmp/x.safetensors
    python baselines/judge_agreement.py --corruptions --out baselines/judges/corruptions_validation.json

``--corruptions``: instead of model outputs, the validation corruption pairs each shipped head reports
in its sidecar (true output > another example's output, echo, truncation, shuffle, ...; the same
seeded pairs, as many prompts as the head's ``--eval-prompts``), scored by every judge compared
(pairwise accuracy with n and a 95% Wilson interval, overall and per corruption): a judge that
agrees with the gold judge on model outputs must also rank the true output above its corruptions.

Judges compared: the shipped e5 judge (or the ``--head`` files), the raw e5 cosine of prompt and
response (no head), and the v0 MiniLM judge head (reference-free for dialogue and summarisation,
reference-aware for translation). The test run also reports, per system, the win rate against the
reference under the e5 judge and under the gold judge, and for translation the win rate of the
King James Version (tests/data/kjv_test_verses.jsonl: 27 test verses, a real human translation
other than the reference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("translation", "summarization", "dialogue")
ENV = {"dialogue": "rlhf_gym/Dialogue-v3", "summarization": "rlhf_gym/Summarization-v2",
       "translation": "rlhf_gym/Translation-v2"}
COMMITTED = {
    "dialogue": ["baselines/smollm2/zeroshot_dialogue.json", "baselines/smollm2/bon4_dialogue.json",
                 "baselines/smollm2/ppo_dialogue_test.json", "baselines/results/sft_dialogue.json",
                 "baselines/results/ppo_vs_sft_dialogue.json", "baselines/results/rloo_vs_sft_dialogue.json",
                 "baselines/results/bon4_vs_sft_dialogue.json"],
    "summarization": ["baselines/smollm2/zeroshot_summarization.json", "baselines/smollm2/bon4_summarization.json",
                      "baselines/results/sft_summarization.json", "baselines/results/ppo_vs_sft_summarization.json"],
    "translation": ["baselines/results/sft_translation.json", "baselines/results/ppo_vs_sft_translation.json"],
}
VALIDATION_AGENTS = {"translation": ["sft:baselines/sft/translation,temperature=1.0",
                                     "ppo:baselines/ppo/translation,temperature=1.0", "retrieval"]}


def _label(spec: str) -> str:
    return spec.replace("predictions:runs/", "").replace(".preds.jsonl", "")


def committed_outputs(kind: str) -> dict[str, dict[str, set[str]]]:
    """{example id: {output text: {system labels}}} from the committed results files."""
    out: dict[str, dict[str, set[str]]] = {}
    for path in COMMITTED[kind]:
        doc = json.loads((ROOT / path).read_text(encoding="utf-8"))
        block = next(iter(doc["envs"].values()))
        agent = _label(doc["agent"]["spec"])
        vs = _label((doc.get("vs_agent") or {}).get("spec") or "")
        for g in block["generations"]:
            out.setdefault(g["id"], {}).setdefault(g["prediction"], set()).add(agent)
            if isinstance(g.get("vs_prediction"), str):
                out[g["id"]].setdefault(g["vs_prediction"], set()).add(vs)
    return out


def agent_outputs(task, specs, examples, out) -> None:
    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import generate

    for spec in specs:
        for record in generate(make_agent(spec, task), examples, 32, spec, False):
            out.setdefault(record["id"], {}).setdefault(record["prediction"], set()).add(spec.split(",")[0])


def validation_outputs(kind: str, task) -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    if kind in VALIDATION_AGENTS:
        agent_outputs(task, VALIDATION_AGENTS[kind], task.examples("validation")[:100], out)
        return out
    for line in (ROOT / f"baselines/smollm2/proxy_data/{kind}_val.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for k, text in enumerate(record["responses"]):
            out.setdefault(record["id"], {}).setdefault(text, set()).add(f"smollm2-sample{k}")
    return out


class E5Cosine:
    """The raw cosine of the e5 query (prompt) and passage (response): no trained head."""

    def __init__(self, kind: str):
        from rlhf_gym.rewards.reference_free import get_e5_encoder

        self.kind, self.encoder, self.name = kind, get_e5_encoder(), "e5-cosine"

    def __call__(self, prompts, responses, references=None):
        from rlhf_gym.rewards.reference_free import judge_query

        q = self.encoder.encode([judge_query(self.kind, p) for p in prompts], "query")
        h = self.encoder.encode(responses, "passage")
        return np.sum(q * h, axis=1).astype(np.float64)


def corruption_accuracy(kind: str, judges: dict) -> dict:
    """Every judge's accuracy on the validation corruption pairs of the shipped head's report (same
    seed, same number of prompts)."""
    from rlhf_gym.rewards.reference_free import accuracy_by_negative, judge_path, task_pairs

    import shlex

    sidecar = json.loads(judge_path(kind).with_suffix(".json").read_text(encoding="utf-8"))
    words = shlex.split(sidecar["command"])
    n_prompts = int(words[words.index("--eval-prompts") + 1])
    pairs = task_pairs(kind, "validation", n_prompts, int(sidecar["seed"]))
    if len(pairs) != sidecar["pairs"]["validation"]:
        raise ValueError(f"{kind}: {len(pairs)} validation pairs, the head's report has "
                         f"{sidecar['pairs']['validation']}")
    return {"env": ENV[kind], "prompts": n_prompts, "pairs": len(pairs),
            # a judge that reads the reference is left out: here the reference is the true output
            "accuracy": {name: accuracy_by_negative(judge, pairs) for name, judge in judges.items()
                         if "reads the reference" not in name}}


def main(argv=None) -> int:
    from rlhf_gym.metrics import win_rate
    from rlhf_gym.rewards.embedding import load_builtin_reward
    from rlhf_gym.rewards.gold import load_gold_judge
    from rlhf_gym.rewards.reference_free import (ReferenceFreeJudge, get_e5_encoder, load_reference_free_judge,
                                                 pairwise_agreement)
    from rlhf_gym.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("validation", "test"), default="test")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--head", action="append", default=[], metavar="NAME=PATH_WITH_{task}",
                        help="an e5 judge head to compare, {task} in the path stands for the task kind "
                             "(default: the shipped heads, as 'e5-judge')")
    parser.add_argument("--corruptions", action="store_true",
                        help="accuracy on the validation corruption pairs instead of agreement on model outputs")
    parser.add_argument("--embed-cache-dir", default=None, help="folder of e5 embedding caches, e5_{task}.pkl")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started = time.time()
    gold = load_gold_judge()
    result: dict = {"split": args.split, "gold": gold.name, "tasks": {}}
    encoder = get_e5_encoder()
    for kind in args.tasks:
        t0 = time.time()
        cache = Path(args.embed_cache_dir) / f"e5_{kind}.pkl" if args.embed_cache_dir else None
        if cache:
            encoder.load_cache(cache)
        task = get_task(ENV[kind])
        judges = {}
        if not args.head:
            judges["e5-judge"] = load_reference_free_judge(kind)
        for spec in args.head:
            name, _, path = spec.partition("=")
            judges[name] = ReferenceFreeJudge.from_file(path.replace("{task}", kind))
        judges["e5-cosine"] = E5Cosine(kind)
        judges["minilm-v0-judge" + ("(reads the reference)" if kind == "translation" else "")] = \
            load_builtin_reward(kind, "judge")
        if args.corruptions:
            result["split"] = "validation"
            result["tasks"][kind] = block = corruption_accuracy(kind, judges)
            block["seconds"] = round(time.time() - t0, 1)
            if cache:
                encoder.save_cache(cache)
            print(f"== {kind} (validation corruption pairs, {block['prompts']} prompts), {block['seconds']} s")
            for name, acc in block["accuracy"].items():
                a = acc["all"]
                print(f"   {name:38s} accuracy {a['mean']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] n={a['n']}  " +
                      " ".join(f"{tag}={r['mean']:.2f}" for tag, r in acc.items() if tag != "all"))
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
            continue
        examples = {ex.id: ex for ex in task.examples(args.split)}
        if args.split == "test":
            outputs = committed_outputs(kind)
            # agents: win rates against the reference; retrieval (real English verses) also joins the
            # translation pairs, where only two models exist; lead (echo / lead-1 / source copy) never
            # does, being one of the corruptions the judges were trained against
            agent_outputs(task, ["retrieval", "lead"], [examples[i] for i in list(outputs)], outputs)
        else:
            outputs = validation_outputs(kind, task)
        items = [(ex_id, text, sorted(labels)) for ex_id, texts in outputs.items() for text, labels in texts.items()]
        prompts = [examples[i].prompt for i, _, _ in items]
        refs = [list(examples[i].references) for i, _, _ in items]
        texts = [t for _, t, _ in items]
        groups = [i for i, _, _ in items]
        gold_scores = gold(prompts, texts, refs)
        scores = {name: judge(prompts, texts, refs) for name, judge in judges.items()}
        paired = {"models": [k for k, (_, _, labels) in enumerate(items) if set(labels) - {"retrieval", "lead"}]}
        if kind == "translation":
            paired["models+retrieval"] = [k for k, (_, _, labels) in enumerate(items) if set(labels) - {"lead"}]
        block = {"env": ENV[kind], "prompts": len(outputs), "agreement": {},
                 "outputs": {name: len(idx) for name, idx in paired.items()}}
        for subset, idx in paired.items():
            g = [groups[k] for k in idx]
            for name, s in scores.items():
                block["agreement"].setdefault(subset, {})[name] = {
                    "all": pairwise_agreement(g, s[idx], gold_scores[idx]),
                    "gold_margin_0.05": pairwise_agreement(g, s[idx], gold_scores[idx], 0.05)}
        if args.split == "test":
            # win rate against the first reference, per system, under every judge and the gold judge
            first = sorted({i for i in groups})
            ref_prompts = [examples[i].prompt for i in first]
            ref_texts = [examples[i].references[0] for i in first]
            ref_refs = [list(examples[i].references) for i in first]
            all_judges = {**judges, "gold": gold}
            all_scores = {**scores, "gold": gold_scores}
            of_ref = {name: dict(zip(first, judge(ref_prompts, ref_texts, ref_refs)))
                      for name, judge in all_judges.items()}
            systems = sorted({label for _, _, labels in items for label in labels})
            block["win_rate_vs_reference"] = {}
            for system in systems:
                idx = [k for k, (_, _, labels) in enumerate(items) if system in labels]
                block["win_rate_vs_reference"][system] = {
                    name: win_rate(all_scores[name][idx], [of_ref[name][groups[k]] for k in idx])
                    for name in all_judges}
            block["win_rate_vs_reference"]["reference"] = {
                name: win_rate(list(v.values()), list(v.values())) for name, v in of_ref.items()}
            if kind == "translation":
                kjv_file = ROOT / "tests/data/kjv_test_verses.jsonl"
                kjv = [json.loads(line) for line in kjv_file.read_text(encoding="utf-8").splitlines()]
                k_ex = [examples[r["id"]] for r in kjv]
                kp, kr = [e.prompt for e in k_ex], [list(e.references) for e in k_ex]
                first_refs = [e.references[0] for e in k_ex]
                kjv_texts = [r["translation"] for r in kjv]
                block["kjv_vs_reference"] = {name: win_rate(judge(kp, kjv_texts, kr), judge(kp, first_refs, kr))
                                             for name, judge in all_judges.items()}
        block["seconds"] = round(time.time() - t0, 1)
        result["tasks"][kind] = block
        if cache:
            encoder.save_cache(cache)
        print(f"== {kind} ({args.split}): {block['prompts']} prompts, outputs {block['outputs']}, {block['seconds']} s")
        for subset, rows in block["agreement"].items():
            for name, r in rows.items():
                a, m = r["all"], r["gold_margin_0.05"]
                print(f"   {subset:17s} {name:38s} agreement {a['mean']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] "
                      f"({a['pairs']} pairs, {a['groups']} prompts); "
                      f"gold margin >= 0.05: {m['mean']:.3f} ({m['pairs']})")
        for system, r in block.get("win_rate_vs_reference", {}).items():
            print(f"   win vs reference  {system[:40]:40s} n={next(iter(r.values()))['n']:3d}  " + "  ".join(
                f"{j}: {w['mean']:.3f} [{w['ci_low']:.2f}, {w['ci_high']:.2f}]" for j, w in r.items()))
        if "kjv_vs_reference" in block:
            print("   KJV vs reference  " + "  ".join(f"{j}: {w['mean']:.3f} ({w['wins']}/{w['n']} wins)"
                                                   for j, w in block["kjv_vs_reference"].items()))
        if args.out:  # after every task, so a kill loses at most the task in progress
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    result["seconds"] = round(time.time() - started, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out} ({result['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
