"""``rlhf-gym loop``: the iterated human-feedback loop, one round at a time.

Each step calls the function behind an existing command; this module only sequences them,
names the files of a round and skips steps whose output is already there.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

SEQUENCE = """\
One round of RLHF with human labels (every step is also a command of its own):

  rlhf-gym bench --agent lead --envs ENV --limit 64 --out baseline.json
  rlhf-gym bench --agent retrieval --envs ENV --limit 64 --out candidate.json
  rlhf-gym feedback queue --results candidate.json baseline.json --db DB
  rlhf-gym leaderboard add-user ANNOTATOR --db DB      # prints the annotator's token
  rlhf-gym leaderboard serve --db DB                   # annotators label pairs at /compare
  rlhf-gym feedback export --out ROUND/prefs.jsonl --db DB
  rlhf-gym train-rm --prefs ROUND/prefs.jsonl --out ROUND/rm.safetensors
  rlhf-gym train ppo --env ENV --policy POLICY --reward ROUND/rm.safetensors --out ROUND/ppo
  rlhf-gym bench --agent ppo:ROUND/ppo --envs ENV --limit 64 --out ROUND/results.json
  rlhf-gym feedback queue --results ROUND/results.json candidate.json --db DB

`loop round` runs the export-to-queue part in one go (each step is skipped when its output
exists, so an interrupted round resumes), and prints the command for the next round, whose
candidate is this round's policy. `loop status` counts labelled and pending pairs."""

ROUND_FILES = {
    "prefs": "prefs.jsonl",      # the labels this round was trained on
    "rm": "rm.safetensors",      # Bradley-Terry reward head (metrics in rm.json)
    "ppo": "ppo",                # PPO run directory; the trained policy when finished
    "results": "results.json",   # bench results of the new policy
    "summary": "round.json",     # what each step reported
}


def round_paths(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    return {key: out / name for key, name in ROUND_FILES.items()}


def _policy_done(ppo_dir: Path) -> bool:
    from rlhf_gym.policy import POLICY_META

    return (ppo_dir / POLICY_META).exists()


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _results_env(path: str | Path, env_id: str) -> dict:
    from rlhf_gym.leaderboard.feedback import _load

    doc = _load(path)
    if env_id not in doc["envs"]:
        raise ValueError(f"{path} has no results for {env_id} (it has: {', '.join(doc['envs']) or 'none'})")
    return doc["envs"][env_id]


def _flags(overrides: dict[str, Any]) -> str:
    parts = []
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def next_round_dir(out: Path) -> Path:
    """``runs/round1`` -> ``runs/round2``; otherwise ``OUT-next``."""
    stem = out.name.rstrip("0123456789")
    digits = out.name[len(stem):]
    return out.with_name(f"{stem}{int(digits) + 1}" if digits else f"{out.name}-next")


def _too_few(n: int, n_held: int, min_pairs: int, db_url: str, command: str) -> ValueError:
    return ValueError(
        f"too few labelled pairs to train a reward head: {n} decisive labels (ties and 'both bad' do not count),"
        f" {n_held} of them in the 10% hash hold-out; need at least {min_pairs} and one held out."
        f" Label more at /compare (`rlhf-gym leaderboard serve --db {db_url}`; annotator tokens from"
        f" `rlhf-gym leaderboard add-user NAME --db {db_url}`), check with `rlhf-gym loop status --db {db_url}`,"
        f" then rerun:\n  {command}")


def run_round(env_id: str, db_url: str, out: str | Path, *, candidate: str | Path, policy: str,
              baseline: str | Path | None = None, preset: str = "cpu-tiny", overrides: dict[str, Any] | None = None,
              limit: int | None = None, min_pairs: int = 20, seed: int = 0, progress: bool = True,
              command: str | None = None) -> dict[str, Any]:
    """One round: export labels -> reward head -> PPO -> bench the new policy -> queue it against
    ``candidate``. Returns (and writes to ``OUT/round.json``) what each step reported."""
    from rlhf_gym.leaderboard.db import Database
    from rlhf_gym.leaderboard.feedback import export_preferences, queue_pairs

    overrides = dict(overrides or {})
    out = Path(out)
    paths = round_paths(out)
    command = command or f"rlhf-gym loop round --env {env_id} --db {db_url} --out {out} ..."
    cand_block = _results_env(candidate, env_id)  # fail on a wrong file before any work
    if limit is None:
        limit = cand_block.get("limit")
    split = cand_block.get("split") or "test"
    db = Database(db_url)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"env_id": env_id, "db": str(db_url), "candidate": str(candidate),
                               "baseline": str(baseline) if baseline else None, "policy": str(policy)}

    def step(n: int, text: str) -> None:
        print(f"[{n}/5] {text}", flush=True)

    if baseline:  # idempotent: makes a first round start from nothing but two results files
        info = queue_pairs(db, candidate, baseline)
        summary["queued_this_round"] = info
        print(f"queued {info['system_a']} vs {info['system_b']}: {info['added']} new, "
              f"{info['already_queued']} already queued")

    # 1. labels -> preference JSONL. Frozen once the head is trained, re-exported until then.
    if paths["rm"].exists() and paths["prefs"].exists():
        step(1, f"export: {paths['prefs']} exists (the head was trained on it), skipped")
        summary["export"] = {"written": len(_read_jsonl(paths["prefs"])), "skipped": True}
    else:
        info = export_preferences(db, paths["prefs"])
        step(1, f"export: wrote {info['written']} preferences to {paths['prefs']} "
                f"({info['skipped_ties']} ties / both-bad skipped)")
        summary["export"] = info

    # 2. reward head (Bradley-Terry over frozen sentence embeddings), same hold-out as train-rm.
    if paths["rm"].exists():
        rm = json.loads(paths["rm"].with_suffix(".json").read_text(encoding="utf-8"))
        step(2, f"reward head: {paths['rm']} exists, skipped")
    else:
        from rlhf_gym.rewards.preferences import pair_bucket, read_preference_file
        from rlhf_gym.rewards.train import train_reward_model

        pairs = read_preference_file(paths["prefs"]) if _read_jsonl(paths["prefs"]) else []
        train = [p for p in pairs if pair_bucket(p) % 10 != 0]
        held = [p for p in pairs if pair_bucket(p) % 10 == 0]
        if len(pairs) < min_pairs or not held or len(train) < 2:
            raise _too_few(len(pairs), len(held), min_pairs, db_url, command)
        step(2, f"reward head: training on {len(train)} pairs, {len(held)} held out")
        rm = train_reward_model(train, held, "preference", paths["rm"], seed, progress=progress,
                                extra_metadata={"data": {"prefs": str(paths["prefs"]), "db": str(db_url)},
                                                "command": command})
        rm.pop("head", None)
    summary["reward_model"] = {k: rm.get(k) for k in ("eval_accuracy", "eval_loss", "dev_accuracy", "pairs",
                                                      "best_epoch", "sha256")}
    n_pairs = sum(rm["pairs"].values())
    print(f"      held-out pairwise accuracy {rm.get('eval_accuracy', float('nan')):.3f} on "
          f"{rm['pairs']['eval']} pairs ({n_pairs} labelled pairs: fit {rm['pairs']['fit']}, "
          f"dev {rm['pairs']['dev']}, eval {rm['pairs']['eval']})")

    # 3. PPO against the head, rolling out through the env of --env.
    if _policy_done(paths["ppo"]):
        step(3, f"PPO: {paths['ppo']} holds a finished policy, skipped")
        history = _read_jsonl(paths["ppo"] / "metrics.jsonl")
    else:
        from rlhf_gym.ppo.config import make_config
        from rlhf_gym.ppo.trainer import train
        from rlhf_gym.rewards.embedding import EmbeddingRewardModel

        resume = (paths["ppo"] / "checkpoint" / "state.pt").exists()
        cfg = make_config(preset, **{"progress": progress, **overrides, "env_id": env_id, "policy": str(policy),
                                     "out": str(paths["ppo"]), "reward": str(paths["rm"]), "resume": resume})
        step(3, f"PPO: {cfg.iterations} iterations ({preset}) from {policy} against {paths['rm']}"
                + (" (resuming)" if resume else ""))
        history = train(cfg, reward_model=EmbeddingRewardModel.from_file(paths["rm"]))
    if not history:
        raise ValueError(f"{paths['ppo']}: no PPO metrics (metrics.jsonl is empty)")
    last = history[-1]
    summary["ppo"] = {"iterations": len(history), "first": history[0], "last": last}
    print(f"      iteration {last['iteration']}: reward {last['reward_mean']:.3f} (first "
          f"{history[0]['reward_mean']:.3f}), KL {last['kl']:.3f}, metrics in {paths['ppo'] / 'metrics.jsonl'}")

    # 4. bench the new policy on the candidate's split/examples.
    agent = f"ppo:{paths['ppo']}"
    done = paths["results"].exists() and env_id in json.loads(paths["results"].read_text(encoding="utf-8"))["envs"]
    if done:
        step(4, f"bench: {paths['results']} exists, skipped")
    else:
        import rlhf_gym.baselines_cli  # noqa: F401  (registers the ppo:DIR agent)
        from rlhf_gym.evaluation import run_bench

        step(4, f"bench: {agent} on {env_id} ({split}, limit {limit})")
        run_bench(agent, [env_id], split=split, limit=limit, out=paths["results"], show_progress=progress)
    metrics = _results_env(paths["results"], env_id)["metrics"]
    summary["bench"] = {"results": str(paths["results"]), "agent": agent,
                        **{k: metrics.get(k) for k in ("reward_mean", "judge_mean", "chrf", "rougeL")}}
    print(f"      reward {metrics.get('reward_mean', float('nan')):.3f}, judge "
          f"{metrics.get('judge_mean', float('nan')):.3f}, results in {paths['results']}")

    # 5. pairs for the next round of labelling (idempotent).
    info = queue_pairs(db, paths["results"], candidate)
    summary["queued_next"] = info
    step(5, f"queue: {info['system_a']} vs {info['system_b']}: {info['added']} pairs queued, "
            f"{info['already_queued']} already queued, {info['identical_skipped']} identical skipped")

    nxt = next_round_dir(out)
    extra = " ".join(x for x in (f"--preset {preset}" if preset != "cpu-tiny" else "", _flags(overrides),
                                 f"--limit {limit}" if limit else "") if x)
    summary["next_command"] = (f"rlhf-gym loop round --env {env_id} --db {shlex.quote(str(db_url))} "
                               f"--baseline {shlex.quote(str(candidate))} --candidate {paths['results']} "
                               f"--policy {paths['ppo']} --out {nxt}" + (f" {extra}" if extra else ""))
    from rlhf_gym.evaluation import write_json_atomic

    write_json_atomic(paths["summary"], summary)
    print(f"round done: {paths['summary']}\nnext: label the new pairs at /compare "
          f"(`rlhf-gym leaderboard serve --db {db_url}`; progress: `rlhf-gym loop status --db {db_url}`), then\n"
          f"  {summary['next_command']}")
    return summary


def print_status(db_url: str, out: str | Path | None = None, as_json: bool = False) -> dict:
    from rlhf_gym.leaderboard.db import Database
    from rlhf_gym.leaderboard.feedback import queue_status

    groups = queue_status(Database(db_url))
    total = {k: sum(g[k] for g in groups) for k in ("pairs", "labelled", "pending", "decisive_labels")}
    info: dict[str, Any] = {"groups": groups, "total": total}
    if out is not None:
        paths = round_paths(out)
        info["round"] = {"prefs": paths["prefs"].exists(), "rm": paths["rm"].exists(),
                         "ppo": _policy_done(paths["ppo"]), "results": paths["results"].exists(),
                         "summary": paths["summary"].exists()}
    if as_json:
        print(json.dumps(info, indent=1))
        return info
    if not groups:
        print("no pairs queued yet (rlhf-gym feedback queue --results A.json B.json)")
    for g in groups:
        labels = ", ".join(f"{k} {v}" for k, v in g["labels"].items())
        print(f"{g['env_id']} {g['system_a']} vs {g['system_b']}: {g['pairs']} pairs, {g['labelled']} labelled,"
              f" {g['pending']} pending (labels: {labels})")
    print(f"total: {total['pairs']} pairs, {total['labelled']} labelled, {total['pending']} pending;"
          f" {total['decisive_labels']} decisive labels for the reward head")
    if out is not None:
        print(f"round {out}: " + ", ".join(f"{k} {'done' if v else 'to do'}" for k, v in info["round"].items()))
    return info


# ------------------------------------------------------------------------------ CLI

_OWN = ("env_id", "policy", "out", "reward", "preset", "resume", "algo")


def _round(args) -> int:
    import sys

    from rlhf_gym.baselines_cli import _overrides
    from rlhf_gym.ppo.config import PPOConfig

    overrides = {k: v for k, v in _overrides(args, PPOConfig).items() if k not in _OWN}
    command = "rlhf-gym " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if len(sys.argv) > 1 else None
    if command is None or " loop round " not in f" {command} ":
        command = (f"rlhf-gym loop round --env {args.env} --db {args.db} --candidate {args.candidate} "
                   f"--policy {args.policy} --out {args.out}")
    run_round(args.env, args.db, args.out, candidate=args.candidate, policy=args.policy, baseline=args.baseline,
              preset=args.preset, overrides=overrides, limit=args.limit, min_pairs=args.min_pairs,
              seed=args.rm_seed, progress=overrides.get("progress", True), command=command)
    return 0


def _status(args) -> int:
    print_status(args.db, args.out, args.json)
    return 0


def register(subparsers) -> None:
    from rlhf_gym.baselines_cli import add_dataclass_args
    from rlhf_gym.leaderboard.cli import DEFAULT_DB
    from rlhf_gym.ppo.config import PRESETS, PPOConfig

    p = subparsers.add_parser("loop", help="the human-feedback loop: label -> reward head -> PPO -> new pairs",
                              description=SEQUENCE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="loop_command", metavar="ACTION")
    p.set_defaults(handler=lambda args: p.print_help() or 0)

    r = sub.add_parser("round", help="export labels, train the reward head, PPO, bench, queue new pairs",
                       description="One round of the loop; steps whose output exists in --out are skipped. "
                                   "Any PPO option (e.g. --iterations) overrides the --preset.")
    r.add_argument("--env", required=True, help="env id; PPO rolls out through it, e.g. rlhf_gym/Dialogue-v0")
    r.add_argument("--db", default=DEFAULT_DB, help="feedback DB: SQLite path or postgresql:// URL")
    r.add_argument("--candidate", required=True,
                   help="results JSON of the current policy; the new policy is queued against it")
    r.add_argument("--baseline", default=None,
                   help="results JSON the candidate was compared with (queued against it first; idempotent)")
    r.add_argument("--policy", required=True, help="policy to start PPO from (a policy directory, smollm2, hf:ID)")
    r.add_argument("--out", required=True, help="round directory (prefs.jsonl, rm.safetensors, ppo/, results.json)")
    r.add_argument("--preset", default="cpu-tiny", choices=sorted(PRESETS))
    r.add_argument("--limit", type=int, default=None,
                   help="bench the first N examples (default: as many as the candidate's results)")
    r.add_argument("--min-pairs", type=int, default=20, help="fewest decisive labels to train on (default 20)")
    r.add_argument("--rm-seed", type=int, default=0, help="seed of the reward head")
    add_dataclass_args(r, PPOConfig, skip=_OWN)
    r.set_defaults(handler=_round)

    s = sub.add_parser("status", help="pairs labelled and pending per system pair (and a round's progress)")
    s.add_argument("--db", default=DEFAULT_DB)
    s.add_argument("--out", default=None, help="a round directory: which of its steps are done")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=_status)
