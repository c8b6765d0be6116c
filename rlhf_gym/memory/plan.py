"""Episodes of the DialogueMemory env: which facts are planted into which real partner turn,
when they are updated and probed, and how a reply is scored.

An episode is one real conversation (chitchat-dataset, split by conversation exactly as the
Dialogue task). The partner (speaker A) says the real human turns 0, 2, 4, ...; the agent answers
as B at turns 1, 3, 5, ... Agent turn ``t`` answers partner turn ``t``. A fact is planted into
partner turn ``plant``, optionally updated at ``update``, and probed at the end of partner turn
``probe``; ``distance`` counts agent turns from the last statement of the right value to the probe.

The plan is a pure function of the conversation id (sha256-seeded), so every run, machine and
``reset`` seed sees the same episode for a conversation.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from rlhf_gym.memory.lexicon import FAVOURITES, SLOTS

MIN_AGENT_TURNS = 6
MAX_AGENT_TURNS = 12
# (label, lowest, highest) distance in agent turns; the report breaks accuracy down by these.
DISTANCE_BUCKETS = (("1-2", 1, 2), ("3-5", 3, 5), ("6-9", 6, 9), ("10+", 10, 10**6))
UPDATE_PROBABILITY = 0.4


def distance_bucket(distance: int) -> str:
    for label, lo, hi in DISTANCE_BUCKETS:
        if lo <= distance <= hi:
            return label
    raise ValueError(f"distance must be >= 1, got {distance}")


# ------------------------------------------------------------------------------ scoring

_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")


def normalize(text: str) -> str:
    """Lower case, accents folded, punctuation as spaces, ordinals as numbers ("14th" -> "14"),
    one space between words: ``"It's MARCH 14th!"`` -> ``"it s march 14"``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^0-9a-z]+", " ", text)
    text = _ORDINAL.sub(r"\1", text)
    return " ".join(text.split())


def mentions(reply: str, value: str) -> bool:
    """Whether ``value`` occurs in ``reply`` as whole words after :func:`normalize`."""
    needle = normalize(value)
    return bool(needle) and f" {needle} " in f" {normalize(reply)} "


def memory_correct(reply: str, answer: str, stale: str | None = None) -> bool:
    """The reply names the current value and not the stale one an update replaced (hedging with
    both names scores 0, as naming only the old one does)."""
    return mentions(reply, answer) and not (stale and mentions(reply, stale))


# Versions of the memory rule (the env id's version: DialogueMemory-v0, -v1).
MEMORY_RULE_VERSIONS = (0, 1)


def memory_score(reply: str, answer: str, stale: str | None = None, other_values: list[str] | tuple[str, ...] = (),
                 version: int = 1) -> dict[str, Any]:
    """Every component of a probe's memory score, and ``memory_correct`` under rule ``version``.

    - v0: the reply names the latest value (``names_answer``) and not the stale one an update
      replaced (``names_stale``): :func:`memory_correct`.
    - v1: v0, **and** the reply names none of ``other_values`` (the values of the episode's other
      facts the partner has stated by this turn: :meth:`Episode.other_values`). A reply that lists
      everything it knows (e.g. copies a fact store into the reply) answers no question: with
      2-3 facts per episode, it names another fact's value and scores 0. An other value that is
      itself part of the answer (whole words) is not counted, so a right answer is never penalised
      for its own words (the lexicons have no such pair; the guard keeps the rule well defined).

    Returns ``names_answer``, ``names_stale``, ``other_values_named`` (the other values found, in
    the order given), ``memory_correct_v0`` and ``memory_correct`` (bools; the latter under ``version``)."""
    if version not in MEMORY_RULE_VERSIONS:
        raise ValueError(f"unknown memory rule version {version!r}; known: {MEMORY_RULE_VERSIONS}")
    names_answer = mentions(reply, answer)
    names_stale = bool(stale) and mentions(reply, stale)
    named = [v for v in other_values if mentions(reply, v) and not mentions(answer, v)]
    v0 = names_answer and not names_stale
    return {"names_answer": names_answer, "names_stale": names_stale, "other_values_named": named,
            "memory_correct_v0": v0, "memory_correct": v0 and not (version >= 1 and named)}


# ------------------------------------------------------------------------------ planning


@dataclass
class Fact:
    slot: str
    value: str          # the right answer at the probe (the updated value when updated)
    plant: int          # partner turn index (0-based count of partner turns) of the first statement
    probe: int
    fields: dict[str, str] = field(default_factory=dict)
    first_value: str | None = None  # the planted value an update replaced (the stale answer)
    update: int | None = None
    plant_text: str = ""
    update_text: str = ""
    probe_text: str = ""
    answer_text: str = ""

    @property
    def updated(self) -> bool:
        return self.update is not None

    @property
    def distance(self) -> int:
        return self.probe - (self.update if self.updated else self.plant)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(updated=self.updated, distance=self.distance, bucket=distance_bucket(self.distance))
        return out


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _fill(template: str, value: str, fields: dict[str, str], old: str | None = None) -> str:
    text = template.format(v=value, old=old or "", a=_article(value), **fields)
    return text[:1].upper() + text[1:]


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(f"memory:{key}".encode()).hexdigest()[:16], 16))


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def plan_facts(conv_id: str, n_agent_turns: int) -> list[Fact]:
    """The facts of one episode: 2 (short episodes) or 3 slots, distance buckets drawn evenly
    among those that fit, at most one probe per partner turn, values distinct within the episode."""
    rng = _rng(conv_id)
    n_facts = 3 if n_agent_turns >= 8 else 2
    slots = [str(s) for s in rng.permutation(sorted(SLOTS))[:n_facts]]
    facts: list[Fact] = []
    used_values: set[str] = set()
    probe_turns: set[int] = set()
    for slot in slots:
        spec = SLOTS[slot]
        fields = {name: str(_pick(rng, options)) for name, options in spec.get("fields", {}).items()}
        pool = FAVOURITES[fields["cat"]] if slot == "favourite" else spec["values"]
        free = [v for v in pool if v not in used_values]
        value = str(_pick(rng, free))
        used_values.add(value)
        updated = bool(spec["update"]) and rng.random() < UPDATE_PROBABILITY
        for _ in range(50):  # rejection sampling: a free probe turn and a distance that fits
            room = n_agent_turns - 1 - (1 if updated else 0)  # the longest distance this episode allows
            buckets = [b for b in DISTANCE_BUCKETS if b[1] <= room]
            _, lo, hi = buckets[int(rng.integers(len(buckets)))]
            distance = int(rng.integers(lo, min(hi, room) + 1))
            probe = int(rng.integers(distance + (1 if updated else 0), n_agent_turns))
            if probe not in probe_turns:
                break
        else:  # pragma: no cover - 50 misses in a >= 6-turn episode with <= 3 probes does not happen
            continue
        probe_turns.add(probe)
        fact = Fact(slot=slot, value=value, plant=probe - distance, probe=probe, fields=fields)
        if updated:
            new = str(_pick(rng, [v for v in pool if v not in used_values]))
            used_values.add(new)
            fact.update = probe - distance
            fact.plant = int(rng.integers(0, fact.update))
            fact.first_value, fact.value = value, new
        fact.plant_text = _fill(str(_pick(rng, spec["plant"])), fact.first_value or fact.value, fields)
        if updated:
            fact.update_text = _fill(str(_pick(rng, spec["update"])), fact.value, fields, old=fact.first_value)
        fact.probe_text = _fill(str(_pick(rng, spec["probe"])), fact.value, fields)
        fact.answer_text = _fill(str(_pick(rng, spec["answer"])), fact.value, fields)
        facts.append(fact)
    return facts


@dataclass
class Episode:
    """One conversation with its facts: ``partner[t]`` is what the partner says before agent turn
    ``t`` (the real turn with planted sentences), ``real_replies[t]`` the human B reply the agent's
    turn replaces, ``references[t]`` the reference of agent turn ``t`` (at a probe, the answer
    followed by the real reply)."""

    id: str
    topic: str
    partner: list[str]
    real_replies: list[str]
    references: list[str]
    facts: list[Fact]
    probe_at: dict[int, int]  # agent turn -> index into facts

    @property
    def n_turns(self) -> int:
        return len(self.partner)

    def other_values(self, fact_index: int, turn: int) -> list[str]:
        """The values of the episode's facts other than ``facts[fact_index]`` that the partner has
        stated by partner turn ``turn`` (planted or updated at or before it): the first value and,
        once updated, the new one. What a reply naming "everything A said" would contain."""
        values = []
        for i, fact in enumerate(self.facts):
            if i == fact_index or fact.plant > turn:
                continue
            values.append(fact.first_value if fact.updated else fact.value)
            if fact.updated and fact.update <= turn:
                values.append(fact.value)
        return values

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "topic": self.topic, "partner": self.partner, "real_replies": self.real_replies,
                "references": self.references, "facts": [f.to_json() for f in self.facts]}


def build_episode(conv_id: str, topic: str, turns: list[str]) -> Episode:
    n = min(len(turns) // 2, MAX_AGENT_TURNS)
    if n < MIN_AGENT_TURNS:
        raise ValueError(f"conversation {conv_id} has {len(turns)} turns; an episode needs {2 * MIN_AGENT_TURNS}")
    rng = _rng(f"splice:{conv_id}")
    facts = plan_facts(conv_id, n)
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    for fact in facts:  # planted sentences go before or after the real turn (after the opening greeting); probes end it
        for turn, text in ((fact.plant, fact.plant_text), (fact.update, fact.update_text)):
            if turn is not None:
                (before if turn > 0 and rng.random() < 0.5 else after).setdefault(turn, []).append(text)
    probe_at = {fact.probe: i for i, fact in enumerate(facts)}
    partner, references = [], []
    real_replies = [turns[2 * t + 1] for t in range(n)]
    for t in range(n):
        parts = before.get(t, []) + [turns[2 * t]] + after.get(t, [])
        if t in probe_at:
            parts.append(facts[probe_at[t]].probe_text)
        partner.append(" ".join(parts))
        references.append(f"{facts[probe_at[t]].answer_text} {real_replies[t]}" if t in probe_at else real_replies[t])
    return Episode(conv_id, topic, partner, real_replies, references, facts, probe_at)


@lru_cache(maxsize=4)
def load_episodes(split: str) -> tuple[Episode, ...]:
    """Every conversation of ``split`` (the Dialogue task's split by conversation id) long enough
    for an episode and made only of characters the env's text spaces admit."""
    from rlhf_gym.data import chitchat_conversations, normalize_split, split_of
    from rlhf_gym.envs.text_env import TEXT_CHARSET

    split = normalize_split(split)
    episodes = []
    for conv in chitchat_conversations():
        if split_of(f"chitchat:{conv['id']}") != split or len(conv["turns"]) < 2 * MIN_AGENT_TURNS:
            continue
        episode = build_episode(str(conv["id"]), conv["topic"], conv["turns"])
        text = conv["topic"] + "".join(episode.partner) + "".join(episode.references)
        if set(text) <= TEXT_CHARSET and len(text) < 12000:
            episodes.append(episode)
    return tuple(episodes)
