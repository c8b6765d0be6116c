"""Core subcommands: ``envs``, ``data``, ``bench``, ``score``, ``train-tokenizer``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("envs", help="list the registered environments")
    p.set_defaults(handler=cmd_envs)

    p = subparsers.add_parser("data", help="print an env's examples as JSONL (id, prompt, references)")
    p.add_argument("--env", required=True, help="env id, e.g. rlhf_gym/Summarization-v0")
    p.add_argument("--split", default="test", help="train, validation or test (default: test)")
    p.add_argument("--limit", type=int, default=None, help="print only the first N examples")
    p.set_defaults(handler=cmd_data)

    p = subparsers.add_parser("bench", help="run the benchmark suite on an agent")
    p.add_argument("--agent", default="lead", help="agent spec: reference, lead, retrieval, hf:PATH, ppo:DIR, "
                                                   "module:Class, file.py:Class (default: lead)")
    p.add_argument("--envs", nargs="+", default=None, help="env ids (default: all utterance-level envs)")
    p.add_argument("--vs", default=None, help="a second agent spec to compute the win rate against")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples only (not a valid submission)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default="results.json", help="results JSON path (default: results.json)")
    p.add_argument("--resume", action="store_true", help="keep envs already scored in --out")
    p.set_defaults(handler=cmd_bench)

    p = subparsers.add_parser("score", help="score a predictions JSONL file ({id, prediction} lines)")
    p.add_argument("--env", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--vs-predictions", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="scores.json")
    p.set_defaults(handler=cmd_score)

    p = subparsers.add_parser("train-tokenizer", help="rebuild the project's BPE tokenizer from the built-in data")
    p.add_argument("--out", default=None, help="output directory (default: the packaged tokenizer)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.set_defaults(handler=cmd_train_tokenizer)


def cmd_envs(args) -> int:
    from rlhf_gym.tasks import list_tasks

    for task in list_tasks():
        print(f"{task.env_id}\t{task.token_env_id}\t{task.kind}\t{task.source}\t{task.description}")
    return 0


def cmd_data(args) -> int:
    from rlhf_gym.tasks import get_task

    examples = get_task(args.env).examples(args.split)
    for ex in examples[: args.limit] if args.limit else examples:
        sys.stdout.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    return 0


def cmd_bench(args) -> int:
    from rlhf_gym.evaluation import print_results_table, run_bench

    results = run_bench(args.agent, args.envs, vs_spec=args.vs, split=args.split, limit=args.limit,
                        batch_size=args.batch_size, out=args.out, resume=args.resume)
    print_results_table(results)
    print(f"wrote {args.out}")
    return 0


def read_predictions(path: str) -> list[dict]:
    from rlhf_gym.data import read_records

    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"predictions file not found: {path}")
    records = []
    for where, record in read_records(file):
        if "id" not in record or not isinstance(record.get("prediction"), str):
            raise ValueError(f"{where}: expected an object with 'id' and a string 'prediction'")
        records.append(record)
    return records


def cmd_score(args) -> int:
    from rlhf_gym.evaluation import new_results, print_results_table, score_predictions, write_json_atomic

    predictions = read_predictions(args.predictions)
    vs = read_predictions(args.vs_predictions) if args.vs_predictions else None
    results = new_results({"spec": f"predictions:{args.predictions}", "name": Path(args.predictions).stem},
                          {"spec": f"predictions:{args.vs_predictions}"} if vs else None)
    block = score_predictions(args.env, predictions, split=args.split, vs_predictions=vs, show_progress=True)
    results["envs"][block["env_id"]] = block
    write_json_atomic(args.out, results)
    print_results_table(results)
    print(f"wrote {args.out}")
    return 0


def cmd_train_tokenizer(args) -> int:
    from rlhf_gym.tokenizer import TOKENIZER_DIR, train_tokenizer

    out = train_tokenizer(args.out or TOKENIZER_DIR, vocab_size=args.vocab_size)
    print(f"wrote {out}")
    return 0
