"""Where the main job's encoder time goes, counted without running a model: token positions each
encoder processes in ``rlhf-gym bench --agent retrieval --vs lead`` on the newest envs, under the
old batching (texts sorted by characters within each batch of 64 the env or judge scores) and
under :func:`rlhf_gym.rewards.encoding.precompute_embeddings` (one token-length sort over the
env's whole text set, batches cut by :func:`rlhf_gym.rewards.encoding.length_batches`).

    python benchmarks/main_job_tokens.py [--out benchmarks/main_job_tokens.json]

Compute is close to proportional to token positions (the weight matrices dominate at these
lengths: about 170 MFLOP per position for MPNet, 21 MFLOP for MiniLM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCORE_BATCH = 64  # rlhf_gym.evaluation.SCORE_BATCH: texts per env step / judge call
OLD_BATCH = {"minilm": 64, "mpnet": 32}  # the encoders' batch sizes before precompute_embeddings


def old_positions(calls: list[list[str]], lengths: dict[str, int], batch_size: int) -> int:
    """Each call encodes its not-yet-cached texts sorted by character length, batch_size at a time."""
    seen: set[str] = set()
    total = 0
    for texts in calls:
        missing = sorted({t for t in texts if t not in seen}, key=lambda t: (len(t), t))
        for i in range(0, len(missing), batch_size):
            batch = missing[i:i + batch_size]
            total += len(batch) * max(lengths[t] for t in batch)
        seen.update(missing)
    return total


def new_positions(texts: list[str], lengths: dict[str, int], batch_size: int, budget: int) -> int:
    from rlhf_gym.rewards.encoding import length_batches

    distinct = list(dict.fromkeys(texts))
    lens = [lengths[t] for t in distinct]
    return sum(len(b) * max(lens[i] for i in b) for b in length_batches(lens, batch_size, budget))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from rlhf_gym.agents import make_agent
    from rlhf_gym.evaluation import list_env_ids
    from rlhf_gym.rewards import embedding, gold
    from rlhf_gym.tasks import get_task

    minilm = embedding.get_encoder()
    mpnet_tok = __import__("transformers").AutoTokenizer.from_pretrained(str(gold.mpnet_dir()))

    def lengths(tokenizer, texts, max_length):
        texts = list(dict.fromkeys(texts))
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        return {t: len(i) for t, i in zip(texts, ids)}

    report = {"envs": {}, "totals": {}}
    totals = {k: 0 for k in ("minilm_real", "minilm_old", "minilm_new", "mpnet_real", "mpnet_old", "mpnet_new")}
    for env_id in list_env_ids():
        task = get_task(env_id)
        examples = task.examples("test")
        infos = [{"source": ex.source, "meta": ex.meta} for ex in examples]
        prompts = [ex.prompt for ex in examples]
        hyps = make_agent("retrieval", task).act(prompts, infos)
        vs = make_agent("lead", task).act(prompts, infos)
        refs = [ex.references[0] for ex in examples]

        def chunks(xs):
            return [xs[i:i + SCORE_BATCH] for i in range(0, len(xs), SCORE_BATCH)]

        row = {"n": len(examples)}
        if embedding.TASK_KIND[task.kind] == "reference":  # MiniLM reads hypothesis and reference
            lm = lengths(minilm.tokenizer, hyps + refs, embedding.TEXT_MAX_LEN)
            old_calls = [c for h, r in zip(chunks(hyps), chunks(refs)) for c in (h, r)]
            row["minilm_real"] = sum(lm[t] for t in set(hyps + refs))
            row["minilm_old"] = old_positions(old_calls, lm, OLD_BATCH["minilm"])
            row["minilm_new"] = new_positions(hyps + refs, lm, minilm.batch_size, minilm.max_batch_tokens)
        else:  # MiniLM reads the prompt (256 tokens) and the response (128)
            lp = lengths(minilm.tokenizer, prompts, embedding.PROMPT_MAX_LEN)
            lh = lengths(minilm.tokenizer, hyps, embedding.TEXT_MAX_LEN)
            row["minilm_real"] = sum(lp.values()) + sum(lh.values())
            row["minilm_old"] = (old_positions(chunks(prompts), lp, OLD_BATCH["minilm"])
                                 + old_positions(chunks(hyps), lh, OLD_BATCH["minilm"]))
            row["minilm_new"] = (new_positions(prompts, lp, minilm.batch_size, minilm.max_batch_tokens)
                                 + new_positions(hyps, lh, minilm.batch_size, minilm.max_batch_tokens))
        lg = lengths(mpnet_tok, hyps + refs + vs, 384)
        # the judge scores the agent, the first references and the vs agent, 64 items per call,
        # each call encoding its responses together with the references
        old_calls = ([h + r for h, r in zip(chunks(hyps), chunks(refs))] + [r + r for r in chunks(refs)]
                     + [v + r for v, r in zip(chunks(vs), chunks(refs))])
        row["mpnet_real"] = sum(lg.values())
        row["mpnet_old"] = old_positions(old_calls, lg, OLD_BATCH["mpnet"])
        row["mpnet_new"] = new_positions(hyps + refs + vs, lg, gold.BATCH_SIZE, gold.MAX_BATCH_TOKENS)
        row["mpnet_distinct_texts"] = len(lg)
        report["envs"][env_id] = row
        for key in totals:
            totals[key] += row[key]
        print(env_id, json.dumps(row), flush=True)
    report["totals"] = totals
    print("totals", json.dumps(totals))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
