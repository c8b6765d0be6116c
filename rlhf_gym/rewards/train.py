"""Train a reward head with a Bradley-Terry loss over frozen MiniLM embeddings (``rlhf-gym train-rm``)."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from rlhf_gym.metrics import format_rate, wilson_interval  # one Wilson interval (re-exported: tests import it here)
from rlhf_gym.rewards.embedding import (
    FEATURE_LAYOUT, KINDS, RewardHead, SentenceEncoder, build_features, get_encoder, n_features, save_head,
    EmbeddingRewardModel,
)
from rlhf_gym.rewards.preferences import TASKS, builtin_pairs, pair_bucket, read_preference_file


def bt_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood, ``-log sigmoid(s_c - s_r)``, averaged."""
    return -torch.nn.functional.logsigmoid(s_chosen - s_rejected).mean()


def pairwise_accuracy(s_chosen: np.ndarray, s_rejected: np.ndarray) -> float:
    """Fraction of pairs with the chosen response strictly ahead; a tie counts as wrong."""
    return float(np.mean(np.asarray(s_chosen) > np.asarray(s_rejected))) if len(s_chosen) else float("nan")


class PairTensors:
    """Features of both sides of each pair, padded over references: ``(n, R, d)`` plus a mask,
    so a reference-aware score (max over references) stays differentiable."""

    def __init__(self, kind: str, encoder: SentenceEncoder, pairs: Sequence[dict[str, Any]], progress: bool = True):
        self.n = len(pairs)
        prompts = [p["prompt"] for p in pairs]
        refs = [p.get("references") or [] for p in pairs] if kind == "reference" else None
        if refs is not None:
            for i, r in enumerate(refs):
                if not r:
                    raise ValueError(f"pair {i}: a reference-aware head needs 'references' in every pair")
        self.chosen = self._padded(kind, encoder, prompts, [p["chosen"] for p in pairs], refs, progress)
        self.rejected = self._padded(kind, encoder, prompts, [p["rejected"] for p in pairs], refs, progress)

    def _padded(self, kind, encoder, prompts, responses, refs, progress):
        feats, owner = build_features(kind, encoder, prompts, responses, refs, progress=progress)
        width = int(np.bincount(owner, minlength=self.n).max()) if self.n else 1
        x = np.zeros((self.n, width, feats.shape[1]), dtype=np.float32)
        mask = np.zeros((self.n, width), dtype=bool)
        slot = np.zeros(self.n, dtype=np.int64)
        for row, item in enumerate(owner):
            x[item, slot[item]] = feats[row]
            mask[item, slot[item]] = True
            slot[item] += 1
        return torch.from_numpy(x), torch.from_numpy(mask)

    @classmethod
    def from_arrays(cls, chosen: np.ndarray, rejected: np.ndarray) -> "PairTensors":
        """Pairs whose features are already computed: one row per side, ``(n, d)`` each."""
        if chosen.shape != rejected.shape or chosen.ndim != 2:
            raise ValueError(f"chosen and rejected features must be (n, d) of one shape, got {chosen.shape} "
                             f"and {rejected.shape}")
        self = cls.__new__(cls)
        self.n = chosen.shape[0]
        full = torch.ones((self.n, 1), dtype=torch.bool)
        self.chosen = (torch.from_numpy(np.ascontiguousarray(chosen, dtype=np.float32))[:, None, :], full)
        self.rejected = (torch.from_numpy(np.ascontiguousarray(rejected, dtype=np.float32))[:, None, :], full.clone())
        return self

    @staticmethod
    def score(head: RewardHead, side: tuple[torch.Tensor, torch.Tensor], idx=None) -> torch.Tensor:
        x, mask = side
        if idx is not None:
            x, mask = x[idx], mask[idx]
        s = head(x)  # (n, R)
        return s.masked_fill(~mask, float("-inf")).max(dim=1).values

    def flat_features(self) -> torch.Tensor:
        rows = [self.chosen[0][self.chosen[1]], self.rejected[0][self.rejected[1]]]
        return torch.cat(rows)


def _evaluate(head: RewardHead, data: PairTensors) -> tuple[float, float]:
    head.eval()
    with torch.inference_mode():
        sc, sr = PairTensors.score(head, data.chosen), PairTensors.score(head, data.rejected)
        loss = float(bt_loss(sc, sr))
    return loss, pairwise_accuracy(sc.numpy(), sr.numpy())


def fit_bt_head(head: RewardHead, fit_t: PairTensors, dev_t: PairTensors, *, seed: int = 0, epochs: int = 100,
                lr: float = 1e-3, weight_decay: float = 0.05, batch_size: int = 128, patience: int = 8,
                progress: bool = True, desc: str = "train head") -> tuple[list[dict], int, float]:
    """Fit ``head`` with the Bradley-Terry loss on ``fit_t`` (AdamW, shuffled mini-batches, seeded),
    stopping early on the loss of ``dev_t``; the head ends with its best-dev-loss weights, in eval
    mode. Features are standardised with statistics of ``fit_t``; ``seed`` orders the mini-batches
    (seed torch's global RNG before building the head for its initial weights). Returns (history,
    best epoch, best dev loss)."""
    generator = torch.Generator().manual_seed(seed)
    head.set_normalisation(fit_t.flat_features())
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)

    best_loss, best_state, best_epoch, stale = float("inf"), None, -1, 0
    history = []
    from tqdm.auto import trange

    bar = trange(epochs, desc=desc, disable=not progress)
    for epoch in bar:
        head.train()
        order = torch.randperm(fit_t.n, generator=generator)
        total = 0.0
        for start in range(0, fit_t.n, batch_size):
            idx = order[start:start + batch_size]
            loss = bt_loss(PairTensors.score(head, fit_t.chosen, idx), PairTensors.score(head, fit_t.rejected, idx))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        dev_loss, dev_acc = _evaluate(head, dev_t)
        history.append({"epoch": epoch, "train_loss": total / fit_t.n, "dev_loss": dev_loss, "dev_acc": dev_acc})
        bar.set_postfix(train=f"{total / fit_t.n:.3f}", dev=f"{dev_loss:.3f}", acc=f"{dev_acc:.3f}")
        if dev_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = dev_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    return history, best_epoch, best_loss


def _load_cache(encoder: SentenceEncoder, path: str | None) -> None:
    if path and Path(path).exists():
        with open(path, "rb") as fh:
            stored = pickle.load(fh)
        if stored.get("encoder_id") == encoder.encoder_id:
            with encoder._lock:
                encoder._cache.update(stored["embeddings"])
                encoder.trim_cache()


def _save_cache(encoder: SentenceEncoder, path: str | None) -> None:
    if path:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            pickle.dump({"encoder_id": encoder.encoder_id, "embeddings": encoder._cache}, fh)
        os.replace(tmp, path)


def train_reward_model(
    pairs_train: Sequence[dict[str, Any]],
    pairs_eval: Sequence[dict[str, Any]],
    kind: str,
    out_path: str | Path | None,
    seed: int = 0,
    *,
    arch: str = "linear",
    hidden: int = 64,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    batch_size: int = 128,
    patience: int = 8,
    encoder: SentenceEncoder | None = None,
    progress: bool = True,
    embed_cache: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a head on ``pairs_train`` and report pairwise accuracy on ``pairs_eval``.

    Early stopping watches a dev slice of the *training* pairs (10% by a hash of each pair), so
    the reported held-out accuracy on ``pairs_eval`` is never used for model selection.
    Writes ``out_path`` (safetensors) and ``out_path.with_suffix('.json')`` when ``out_path`` is set.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown head kind {kind!r}; expected one of {', '.join(KINDS)}")
    if len(pairs_train) < 2:
        raise ValueError("need at least 2 training pairs")
    started = time.time()
    encoder = encoder or get_encoder()
    _load_cache(encoder, embed_cache)
    dev = [p for p in pairs_train if pair_bucket(p) < 10]
    fit = [p for p in pairs_train if pair_bucket(p) >= 10]
    if not dev or not fit:  # a handful of pairs: fall back to a positional split
        cut = max(1, len(pairs_train) // 10)
        dev, fit = list(pairs_train[:cut]), list(pairs_train[cut:])
    fit_t = PairTensors(kind, encoder, fit, progress)
    dev_t = PairTensors(kind, encoder, dev, progress)
    eval_t = PairTensors(kind, encoder, pairs_eval, progress) if pairs_eval else None
    _save_cache(encoder, embed_cache)

    torch.manual_seed(seed)  # the head's initial weights
    head = RewardHead(kind, arch, hidden)
    history, best_epoch, best_loss = fit_bt_head(head, fit_t, dev_t, seed=seed, epochs=epochs, lr=lr,
                                                 weight_decay=weight_decay, batch_size=batch_size, patience=patience,
                                                 progress=progress, desc=f"train {kind}/{arch}")

    metrics: dict[str, Any] = {
        "kind": kind, "arch": arch, "hidden": hidden if arch == "mlp" else None,
        "feature_layout": FEATURE_LAYOUT[kind], "n_features": n_features(kind),
        "n_parameters": sum(p.numel() for p in head.parameters()),
        "seed": seed, "epochs_max": epochs, "best_epoch": best_epoch, "lr": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "patience": patience,
        "pairs": {"fit": len(fit), "dev": len(dev), "eval": len(pairs_eval)},
        "initial_train_loss": history[0]["train_loss"] if history else None,
        "final_train_loss": history[best_epoch]["train_loss"] if history else None,
        "dev_loss": best_loss, "dev_accuracy": history[best_epoch]["dev_acc"] if history else None,
        "encoder": encoder.encoder_id,
    }
    if eval_t is not None:
        metrics["eval_loss"], metrics["eval_accuracy"] = _evaluate(head, eval_t)
    metrics.update(extra_metadata or {})
    metrics["train_seconds"] = round(time.time() - started, 1)
    if out_path is not None:
        out_path = Path(out_path)
        save_head(head, out_path, {"seed": str(seed), "encoder": encoder.encoder_id})
        model = EmbeddingRewardModel.from_file(out_path, encoder=encoder)
        metrics["sha256"] = model.sha256
        metrics["head_bytes"] = out_path.stat().st_size
        out_path.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    metrics["head"] = head
    return metrics


MIN_EVAL_PAIRS = 20


def evaluate_pairs(head: RewardHead, kind: str, pairs: Sequence[dict[str, Any]],
                   encoder: SentenceEncoder | None = None) -> dict[str, Any]:
    """Pairwise accuracy of ``head`` on ``pairs``: ``{"n", "correct", "accuracy", "ci95", "by_negative"}``
    (ties count as wrong; ``by_negative`` splits by the pairs' ``negative`` field when present)."""
    encoder = encoder or get_encoder()
    if not pairs:
        return {"n": 0, "correct": 0, "accuracy": None, "ci95": None, "by_negative": {}}
    data = PairTensors(kind, encoder, pairs, progress=False)
    head.eval()
    with torch.inference_mode():
        right = (PairTensors.score(head, data.chosen) > PairTensors.score(head, data.rejected)).numpy()
    out = {"n": len(pairs), "correct": int(right.sum()), "accuracy": float(right.mean()),
           "ci95": list(wilson_interval(int(right.sum()), len(pairs))), "by_negative": {}}
    tags = [p.get("negative") for p in pairs]
    for tag in sorted({t for t in tags if t}):
        idx = [i for i, t in enumerate(tags) if t == tag]
        k = int(right[idx].sum())
        out["by_negative"][tag] = {"n": len(idx), "accuracy": k / len(idx), "ci95": list(wilson_interval(k, len(idx)))}
    return out


def _limit(pairs: list, n: int | None) -> list:
    return pairs if n is None else pairs[:n]


def _format_eval(label: str, result: dict[str, Any]) -> str:
    def rate(r):  # accuracy [95% Wilson CI], rounded outwards so the accuracy is always inside
        return format_rate({"mean": r["accuracy"], "ci_low": r["ci95"][0], "ci_high": r["ci95"][1]}, digits=4)

    line = f"{label}: pairwise accuracy {rate(result)} (95% Wilson CI) on n={result['n']} pairs"
    for tag, r in result["by_negative"].items():
        line += f"\n    {tag:18s} {rate(r)}  n={r['n']}"
    return line


def _handle(args) -> int:
    prefs = list(args.prefs or [])
    if args.task is None and not prefs:
        raise ValueError("give --task (built-in pairs), --prefs FILE [FILE ...], or both with --with-builtin")
    if args.with_builtin and args.task is None:
        raise ValueError("--with-builtin adds a task's built-in pairs: give --task too")
    if args.task is not None and prefs and not args.with_builtin:
        raise ValueError("--task and --prefs together: add --with-builtin to train on both the built-in and the "
                         "file pairs (or drop one of them)")
    kind = args.kind or ("reference" if args.task == "translation" else "preference")
    train: list = []
    held: dict[str, list] = {}  # held-out groups, reported separately
    source: dict[str, Any] = {}
    if args.task is not None:
        train += _limit(builtin_pairs(args.task, args.train_split, args.seed), args.max_pairs)
        held[f"built-in {args.task} {args.eval_split}"] = _limit(
            builtin_pairs(args.task, args.eval_split, args.seed), args.max_eval_pairs)
        source.update({"task": args.task, "train_split": args.train_split, "eval_split": args.eval_split})
    if prefs:
        file_pairs = [pair for path in prefs for pair in read_preference_file(path)]
        if args.eval_prefs:
            file_train = file_pairs
        else:  # a 10% hold-out by hash, disjoint from the training pairs' own dev slice
            file_train = [p for p in file_pairs if pair_bucket(p) % 10 != 0]
            held["--prefs 10% hold-out"] = _limit([p for p in file_pairs if pair_bucket(p) % 10 == 0],
                                                  args.max_eval_pairs)
        train += _limit(file_train, args.max_pairs)
        source["prefs"] = [str(p) for p in prefs]
    if args.eval_prefs:
        for path in args.eval_prefs:
            held[f"--eval-prefs {path}"] = _limit(read_preference_file(path), args.max_eval_pairs)
        source["eval_prefs"] = [str(p) for p in args.eval_prefs]
    n_held = sum(len(v) for v in held.values())
    if n_held == 0:
        raise ValueError("no held-out pairs to report an accuracy on: give --eval-prefs FILE or more --prefs pairs")
    if n_held < MIN_EVAL_PAIRS:
        print(f"WARNING: only {n_held} held-out pairs (fewer than {MIN_EVAL_PAIRS}): the held-out accuracy below "
              "is too noisy to mean much; give --eval-prefs FILE with more pairs", file=sys.stderr)
    command = "rlhf-gym train-rm " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None
    all_held = [p for group in held.values() for p in group]
    metrics = train_reward_model(
        train, all_held, kind, None, args.seed, arch=args.arch, hidden=args.hidden, epochs=args.epochs,
        lr=args.lr, weight_decay=args.weight_decay, embed_cache=args.embed_cache,
        progress=not args.quiet, extra_metadata={"data": source, "command": command},
    )
    head = metrics.pop("head")
    groups = {label: evaluate_pairs(head, kind, pairs) for label, pairs in held.items() if pairs}
    metrics["eval_groups"] = groups
    overall = evaluate_pairs(head, kind, all_held)
    metrics["eval_ci95"] = overall["ci95"]
    metrics["eval_by_negative"] = overall["by_negative"]
    # write the head and its metrics (with the per-group held-out results)
    out = Path(args.out)
    save_head(head, out, {"seed": str(args.seed), "encoder": get_encoder().encoder_id})
    model = EmbeddingRewardModel.from_file(out)
    metrics["sha256"] = model.sha256
    metrics["head_bytes"] = out.stat().st_size
    out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"trained on {metrics['pairs']['fit']} pairs (dev {metrics['pairs']['dev']}, best epoch "
          f"{metrics['best_epoch']})")
    print(_format_eval(f"held-out pairwise accuracy (all {n_held})", overall))
    if len(groups) > 1:
        for label, result in groups.items():
            print(_format_eval(f"  {label}", result))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train-rm", help="train an embedding reward head (Bradley-Terry) on preference pairs",
        description="Train an embedding reward head (Bradley-Terry) on preference pairs and report its held-out "
                    "pairwise accuracy with n and a 95%% interval. Cost: embedding the pairs dominates; a "
                    "dialogue head's built-in pairs took about 5 minutes on 2 shared CPU cores with a cold cache "
                    "and the final four heads 73 s with every embedding cached (envs/REWARD_MODELS.md); "
                    "--embed-cache keeps the embeddings between runs.")
    src = p.add_argument_group("data")
    src.add_argument("--task", choices=TASKS, help="built-in pairs from the task's pack")
    src.add_argument("--prefs", nargs="+", action="extend", metavar="FILE",
                     help="JSONL preference files (prompt/chosen/rejected, or hh-rlhf transcripts); repeatable")
    src.add_argument("--with-builtin", action="store_true",
                     help="with --task and --prefs: train on the task's built-in pairs plus the file pairs")
    p.add_argument("--eval-prefs", nargs="+", action="extend", metavar="FILE",
                   help="held-out preference files, reported with n and a 95%% Wilson interval "
                        "(default: 10%% of --prefs by hash)")
    p.add_argument("--train-split", default="train", help="split for built-in training pairs (default train)")
    p.add_argument("--eval-split", default="validation", help="split for built-in held-out pairs (default validation)")
    p.add_argument("--kind", choices=KINDS, help="preference (reference-free) or reference (default by task)")
    p.add_argument("--arch", choices=("linear", "mlp"), default="linear")
    p.add_argument("--hidden", type=int, default=64, help="MLP hidden width")
    p.add_argument("--out", required=True, help="output .safetensors path (metrics go to the .json beside it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=100, help="maximum epochs (early stopping on a dev slice)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--max-pairs", type=int, default=None, help="cap on training pairs, per source (embedding is the cost)")
    p.add_argument("--max-eval-pairs", type=int, default=None, help="cap on held-out pairs (per group)")
    p.add_argument("--embed-cache", default=None, help="pickle file to reuse embeddings across runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_handle)


def main(argv: list[str] | None = None) -> int:
    """``python -m rlhf_gym.rewards.train train-rm ...``: the same command without the full CLI."""
    import argparse

    parser = argparse.ArgumentParser(prog="rlhf-gym")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
