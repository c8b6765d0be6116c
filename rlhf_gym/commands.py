"""Core subcommands: ``envs``, ``data``, ``bench``, ``score``, ``train-tokenizer``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlhf_gym.rewards.safety import SAFETY_SPECS as SAFETY_CHOICES  # light: numpy only until a check is loaded


def positive_int(text: str) -> int:
    """argparse type for counts (--limit, --batch-size, --k): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (leave it out for the whole split), got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("envs", help="list the registered environments")
    p.set_defaults(handler=cmd_envs)

    p = subparsers.add_parser("data", help="print an env's examples as JSONL (id, prompt, references), or as a "
                                           "TRL / verl prompt dataset")
    p.add_argument("--env", required=True, help="env id, e.g. rlhf_gym/Summarization-v0")
    p.add_argument("--split", default=None, help="train, validation or test (default: test; train for trl/verl)")
    p.add_argument("--limit", type=positive_int, default=None, help="print only the first N examples")
    p.add_argument("--format", default="examples", choices=["examples", "trl", "trl-chat", "verl"],
                   help="examples (default); trl: {prompt, example_id} for TRL's GRPO/RLOO with "
                        "rlhf_gym.integrations.trl.make_reward_func; trl-chat: the same with the prompt as chat "
                        "messages; verl: verl's RL dataset rows (data_source, prompt, reward_model, extra_info)")
    p.add_argument("--policy", default=None, help="trl/verl: format prompts as the project's trainers do for this "
                                                  "policy (smollm2, hf:PATH, a policy directory)")
    p.set_defaults(handler=cmd_data)

    p = subparsers.add_parser(
        "bench", help="run the benchmark suite on an agent",
        description="Run an agent (and --vs) on the test split of each env and score it: BLEU, chrF, ROUGE, the "
                    "env's reward, win rates under the judge. Cost: --agent retrieval --vs lead on "
                    "rlhf_gym/Dialogue-v2 (219 examples, MPNet gold judge) took 1,053 s with the 2 CPU cores "
                    "shared with other jobs; the default suite adds 1,817 translation and summarisation examples, "
                    "and model agents add their generation. Try --limit 20 first; --resume continues a killed run.")
    p.add_argument("--agent", default="lead", help="agent spec: reference, lead, retrieval, pad[:SPEC], padsrc[:SPEC] "
                                                   "(length probes), smollm2[,temperature=T], "
                                                   "hf:PATH, ppo:DIR, rloo:DIR, sft:DIR, bon:POLICY,n=4, "
                                                   "module:Class, file.py:Class (default: lead)")
    p.add_argument("--envs", nargs="+", default=None,
                   help="env ids (default: the newest version of every utterance-level task)")
    p.add_argument("--vs", default=None, help="a second agent spec to compute the win rate against")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate the first N examples only (not a valid submission)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--out", default="results.json", help="results JSON path (default: results.json); an existing "
                                                        "file is an error unless --resume or --overwrite")
    p.add_argument("--resume", action="store_true",
                   help="keep the envs already scored in --out (same agent, --vs, split, limit, reward and safety "
                        "penalty, else an error), and shards a killed or failed run finished (OUT.shards/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (and OUT.shards/)")
    p.add_argument("--reward", default=None, help="reward spec replacing the env's default reward model: builtin, "
                                                  "judge, gold, chrf, bleu, rougeL, HEAD.safetensors, hf:PATH_OR_ID, "
                                                  "FILE.py:FUNCTION, or a weighted sum like 0.7*builtin+0.3*chrf")
    p.add_argument("--safety-coef", type=float, default=0.0,
                   help="the env's safety penalty: reward -= coef * unsafe(response) (default 0)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: shards one after another here; ray: shards of all envs as Ray tasks, same "
                        "results (needs `pip install ray`)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--shard-size", type=positive_int, default=None, help="examples per shard (default 256)")
    p.add_argument("--max-retries", type=int, default=None,
                   help="tries after a shard's first failure (default: 1 with ray, 0 locally)")
    p.add_argument("--seeds", type=_seed_list, default=None, metavar="S1,S2,...",
                   help="run a sampling agent once per seed (e.g. 0,1,2): per-seed numbers and an aggregate with a "
                        "95%% CI over seeds and prompts; a deterministic agent runs once (one seed suffices)")
    p.add_argument("--safety", default=None, choices=SAFETY_CHOICES,
                   help="safety check for the unsafe-output rate (and the penalty): classifier (default: "
                        "alt-profanity-check, flagged at p >= 0.5), blocklist, classifier+blocklist")
    add_device_arg(p, agents=True)
    p.set_defaults(handler=cmd_bench)

    p = subparsers.add_parser("sample", help="sample K responses per prompt from a policy (JSONL; resumable)")
    p.add_argument("--env", required=True, help="env id, e.g. rlhf_gym/Dialogue-v0")
    p.add_argument("--policy", default=None, help="smollm2, hf:ID_OR_PATH or a policy directory (default: the "
                                                  "task's default policy)")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=positive_int, default=None, help="the first N examples of the split")
    p.add_argument("--k", type=positive_int, default=4, help="samples per prompt (default 4)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per generate call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSONL: {id, prompt, references, responses} per example")
    p.set_defaults(handler=cmd_sample)

    p = subparsers.add_parser("label-pairs", help="turn policy samples (from `sample`) into preference pairs "
                                                  "labelled by a judge (synthetic gold labels)")
    p.add_argument("--env", required=True)
    p.add_argument("--samples", required=True, nargs="+", help="JSONL files written by `rlhf-gym sample`")
    p.add_argument("--judge", default="gold", help="reward spec of the labeller (default: gold)")
    p.add_argument("--min-margin", type=float, default=0.05, help="keep pairs whose judge scores differ by this much")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=cmd_label_pairs)

    p = subparsers.add_parser("score", help="score a predictions JSONL file ({id, prediction} lines)")
    p.add_argument("--env", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--vs-predictions", default=None)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="the first N examples of the split (as bench --limit)")
    p.add_argument("--reward", default=None, help="reward spec replacing the env's default reward model")
    p.add_argument("--safety-coef", type=float, default=0.0, help="the env's safety penalty coefficient")
    p.add_argument("--safety", default=None, choices=SAFETY_CHOICES,
                   help="safety check: classifier (default), blocklist, classifier+blocklist")
    add_device_arg(p, agents=False)
    p.add_argument("--out", default="scores.json",
                   help="results JSON path (default: scores.json); an existing file is an error unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(handler=cmd_score)

    p = subparsers.add_parser("train-tokenizer", help="rebuild the project's BPE tokenizer from the built-in data")
    p.add_argument("--out", default=None, help="output directory (default: the packaged tokenizer)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.set_defaults(handler=cmd_train_tokenizer)


def add_device_arg(p, agents: bool) -> None:
    """``--device`` of bench and score (rlhf_gym.bench_device)."""
    p.add_argument("--device", default=None, metavar="{cpu,cuda,cuda:N,mps,auto}",
                   help="where the encoders of the reward model, the judges and a torch safety check run"
                        + (", and model agents that take a device (unless their spec names one)" if agents else "")
                        + "; auto: cuda when torch sees a GPU, else cpu. Default: cpu for the encoders, so results "
                        "stay bit-comparable with the committed ones (another device agrees to float noise; the "
                        "results file records it)" + (", and each agent's own device" if agents else "")
                        + ". The e5 reference-free judges and the profanity classifier always run on the CPU")


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]; anything else is an argparse error naming the bad part."""
    import argparse

    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers such as 0,1,2, got {text!r}")
    return seeds


def cmd_envs(args) -> int:
    from rlhf_gym.tasks import list_tasks

    for task in list_tasks():
        print(f"{task.env_id}\t{task.token_env_id}\t{task.kind}\t{task.source}\t{task.description}")
    print("rlhf_gym/DialogueMemory-v1\t-\tdialogue\tchitchat\tMulti-turn: real conversations with planted, "
          "updated and probed facts; a probe reply naming other facts' values scores 0 (envs/DialogueMemory.md).")
    print("rlhf_gym/DialogueMemory-v0\t-\tdialogue\tchitchat\tAs v1 with the v0 memory rule (a reply dumping "
          "every fact scores; kept for the recorded results).")
    return 0


def cmd_data(args) -> int:
    from rlhf_gym.envs.memory import is_memory_env
    from rlhf_gym.tasks import get_task

    if is_memory_env(args.env) and args.format == "examples":  # one episode per line: turns, facts, probes
        from rlhf_gym.memory.plan import load_episodes

        episodes = load_episodes(args.split or "test")
        for episode in episodes[: args.limit] if args.limit else episodes:
            sys.stdout.write(json.dumps(episode.to_json(), ensure_ascii=False) + "\n")
        return 0
    if args.format != "examples":
        from rlhf_gym.integrations.trl import prompt_records
        from rlhf_gym.integrations.verl import verl_records

        split = args.split or "train"
        if args.format == "verl":
            records = verl_records(args.env, split, limit=args.limit, policy=args.policy)
        else:
            records = prompt_records(args.env, split, conversational=args.format == "trl-chat", limit=args.limit,
                                     policy=args.policy)
    else:
        if args.policy:
            raise ValueError("--policy formats trl/verl prompts; add --format trl, trl-chat or verl")
        examples = get_task(args.env).examples(args.split or "test")
        records = [ex.to_json() for ex in (examples[: args.limit] if args.limit else examples)]
    for record in records:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    return 0


def cmd_bench(args) -> int:
    from rlhf_gym.bench_shards import ShardsFailed
    from rlhf_gym.evaluation import (
        SHARD_SIZE,
        check_output_path,
        print_results_table,
        run_bench,
    )

    check_output_path(args.out, resume=args.resume, overwrite=args.overwrite)  # before minutes of work
    try:
        results = run_bench(args.agent, args.envs, vs_spec=args.vs, split=args.split, limit=args.limit,
                            batch_size=args.batch_size, out=args.out, resume=args.resume, reward=args.reward,
                            safety_coef=args.safety_coef, executor=args.executor, address=args.address,
                            num_cpus=args.num_cpus, shard_size=args.shard_size or SHARD_SIZE,
                            max_retries=args.max_retries, seeds=args.seeds,
                            safety=args.safety, device=args.device)
    except ShardsFailed as err:
        print(f"rlhf-gym bench: error: {err}", file=sys.stderr)
        return 1
    print_results_table(results)
    print(f"wrote {args.out}")
    return 0


def cmd_sample(args) -> int:
    """K samples per prompt, written one example per line as soon as its batch is done, so a
    killed run continues where it stopped (examples already in --out are skipped)."""
    import torch
    from tqdm.auto import tqdm

    from rlhf_gym.envs.text_env import fit_action
    from rlhf_gym.policy import generate, resolve_policy
    from rlhf_gym.tasks import get_task

    task = get_task(args.env)
    examples = task.examples(args.split)[: args.limit] if args.limit else task.examples(args.split)
    out = Path(args.out)
    done = set()
    if out.exists():
        for n, line in enumerate(out.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    done.add(json.loads(line)["id"])
                except (ValueError, KeyError) as err:
                    raise ValueError(f"{out} line {n} is not a sample record ({err}); use another --out") from None
    todo = [ex for ex in examples if ex.id not in done]
    model, tok, meta = resolve_policy(args.policy, task.env_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(done)} examples already in {out}; sampling {len(todo)} x {args.k}", file=sys.stderr)
    with open(out, "a", encoding="utf-8") as fh:
        for start in tqdm(range(0, len(todo), args.batch_size), desc=f"sample {task.name}", unit="batch"):
            batch = todo[start:start + args.batch_size]
            torch.manual_seed(args.seed + start)
            *_, texts, _ = generate(model, tok, meta, [ex.prompt for ex in batch], temperature=args.temperature,
                                    do_sample=True, num_return_sequences=args.k)
            for j, ex in enumerate(batch):
                responses = [fit_action(t, task.max_response_chars) for t in texts[j * args.k:(j + 1) * args.k]]
                fh.write(json.dumps({"id": ex.id, "prompt": ex.prompt, "references": list(ex.references),
                                     "responses": responses, "policy": args.policy or "default",
                                     "temperature": args.temperature}, ensure_ascii=False) + "\n")
            fh.flush()
    return 0


def cmd_label_pairs(args) -> int:
    from rlhf_gym.data import read_records
    from rlhf_gym.rewards.preferences import policy_sample_pairs
    from rlhf_gym.rewards.spec import load_reward
    from rlhf_gym.tasks import get_task

    task = get_task(args.env)
    samples = [record for path in args.samples for _, record in read_records(Path(path))]
    judge = load_reward(args.judge, task)
    pairs = policy_sample_pairs(samples, judge, args.min_margin)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    print(f"{len(pairs)} pairs from {len(samples)} prompts labelled by {judge.name} -> {args.out}")
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
    from rlhf_gym.bench_device import device_record, resolve_bench_device
    from rlhf_gym.evaluation import (
        check_output_path,
        new_results,
        print_results_table,
        score_predictions,
        write_json_atomic,
    )

    check_output_path(args.out, overwrite=args.overwrite)
    device = resolve_bench_device(args.device)  # a bad or missing device: an error before any work
    predictions = read_predictions(args.predictions)
    vs = read_predictions(args.vs_predictions) if args.vs_predictions else None
    results = new_results({"spec": f"predictions:{args.predictions}", "name": Path(args.predictions).stem},
                          {"spec": f"predictions:{args.vs_predictions}"} if vs else None)
    results["device"] = device_record(args.device, device)
    block = score_predictions(args.env, predictions, split=args.split, vs_predictions=vs, show_progress=True,
                              limit=args.limit, reward=args.reward, safety_coef=args.safety_coef,
                              safety=args.safety, device=device)
    results["envs"][block["env_id"]] = block
    from rlhf_gym.winrate import overall_ranking_score

    results["overall"] = overall_ranking_score(results["envs"])
    write_json_atomic(args.out, results)
    print_results_table(results)
    print(f"wrote {args.out}")
    return 0


def cmd_train_tokenizer(args) -> int:
    from rlhf_gym.tokenizer import TOKENIZER_DIR, train_tokenizer

    out = train_tokenizer(args.out or TOKENIZER_DIR, vocab_size=args.vocab_size)
    print(f"wrote {out}")
    return 0
