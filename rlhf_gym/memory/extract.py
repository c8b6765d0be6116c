"""A rule-based fact extractor over the partner's turns: the store behind the ``smollm2-memory`` agent.

It reads only the conversation text (never the env's plan or answers): regular expressions for
the ways people state a name, a pet's or relative's name, where they live, their job, when
something happens and what their favourite thing is. They were written together with the env's
templates, so on this env they are close to an upper bound for rule extraction; a later statement
of the same key replaces an earlier one, which is what makes updates work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CAP = r"([A-Z][a-z]+(?:[ -][A-Z][a-z]+)?)"
_NOUN = r"([a-z]+(?: [a-z]+)?)"
_EVENT = r"([a-z][a-z'-]*(?: [A-Za-z][a-z'-]*){0,5}?)"
_END = r"(?: now| these days)?(?=[.,!?]|$)"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_DATE = rf"({_MONTH} \d{{1,2}}(?:st|nd|rd|th)?|{_DAY})"
# Capitalised words that follow "I'm" or "my X" without being names.
_NOT_NAMES = {"Not", "So", "Just", "Also", "Really", "Very", "Sure", "Good", "Fine", "Here", "There", "The", "And",
              "But", "Yes", "No", "Oh", "Well", "Glad", "Sorry", "Actually", "Pretty", "Always", "Still", "Doing",
              "Going", "From", "In", "At", "On", "Happy", "Excited", "American", "English", "Honestly", "I"}
_CALENDAR = set(re.findall(r"[A-Z][a-z]+", _MONTH + _DAY))
_NOT_JOBS = {"bit", "little", "lot", "big", "huge", "fan", "good", "great", "real", "very", "bad", "student of"}


@dataclass
class StoredFact:
    key: str     # e.g. "name", "dog", "best friend", "city", "job", "dentist appointment", "favourite fruit"
    value: str
    turn: int    # partner turn it was last stated in

    def sentence(self) -> str:
        if self.key == "name":
            return f"A's name is {self.value}."
        if self.key == "city":
            return f"A lives in {self.value}."
        if self.key == "job":
            return f"A works as {self.value}."
        if self.key.startswith("favourite "):
            return f"A's {self.key} is {self.value}."
        if self.key.startswith("when "):
            return f"A's {self.key[5:]} is on {self.value}."
        return f"A's {self.key} is called {self.value}."


# (key, the group holding the value, pattern); "{1}"/"{2}" in a key are taken from that group.
_RULES: list[tuple[str, int, re.Pattern]] = [
    ("name", 1, re.compile(rf"\b(?:[Mm]y name is|[Mm]y name's|call me|calls me|go by|introduced myself: I'm|I'm) {_CAP}")),
    ("name", 1, re.compile(rf"(?:^|[.!?] ){_CAP} here\b")),
    ("name", 1, re.compile(rf"\bname, it's {_CAP}")),
    ("{1}", 2, re.compile(rf"\b[Mm]y {_NOUN}(?:'s name is| is called| is named|,)? {_CAP}")),
    ("{1}", 2, re.compile(rf"\b(?:a|our) {_NOUN},? (?:named|called|we named it) {_CAP}")),
    ("{1}", 2, re.compile(rf"\bcalling our {_NOUN} {_CAP}")),
    ("{1}", 2, re.compile(rf"\brenamed the {_NOUN}, it's {_CAP}")),
    ("{1}", 2, re.compile(rf"\bthe {_NOUN}'s name to {_CAP}")),
    ("{2}", 1, re.compile(rf"\b{_CAP}, my {_NOUN}\b")),
    ("city", 1, re.compile(rf"\b(?:live in|living in|lived in|[Hh]ere in|live, in|moved to|I'm in) {_CAP}(?=[ ,.!?]|$)")),
    ("job", 1, re.compile(r"\b(?:work as|working as|started as|I'm|been|[Bb]eing) an? ([a-z]+(?: [a-z]+){0,2}?)"
                          r"(?= by trade| now| for|[.,!?]| on )")),
    ("when {1}", 2, re.compile(rf"\b[Mm]y {_EVENT}(?: coming up)? (?:is on|is now on|is|on|got moved to|for) {_DATE}")),
    ("when {1}", 2, re.compile(rf"\bthe {_EVENT} is now on {_DATE}")),
    ("when {1}", 2, re.compile(rf"\brescheduled my {_EVENT} for {_DATE}")),
    ("favourite {1}", 2, re.compile(rf"\b[Ff]avou?rite {_NOUN}(?: is|:) ([\w ]+?){_END}")),
    ("favourite {2}", 1, re.compile(rf"(?:with|[Bb]eats|over \w+,) ([\w ]+?),? (?:it's|easily|is) my favourite {_NOUN}{_END}")),
    ("favourite {1}", 2, re.compile(rf"\bthe best {_NOUN} is ([\w ]+?){_END}")),
]
_RELATIVE_OR_PET_NOUNS = re.compile(r"^(?:new |old |little |pet )?([a-z]+(?: [a-z]+)?)$")


def extract_facts(partner_turns: list[str]) -> dict[str, StoredFact]:
    """Facts stated in the partner's turns, latest statement per key."""
    store: dict[str, StoredFact] = {}
    for turn, text in enumerate(partner_turns):
        for key_form, value_group, pattern in _RULES:
            for match in pattern.finditer(text):
                groups = match.groups()
                value = groups[value_group - 1].strip()
                key = key_form.replace("{1}", groups[0]).replace("{2}", groups[1] if len(groups) > 1 else "")
                if key == "{1}" or not value:
                    continue
                if key in ("name", "city") or key_form in ("{1}", "{2}"):
                    if value.split()[0] in _NOT_NAMES:
                        continue
                if key_form in ("{1}", "{2}") and not _RELATIVE_OR_PET_NOUNS.match(key):
                    continue
                if key_form in ("{1}", "{2}") and key in ("name", "favourite", "job"):
                    continue
                if value.split()[0] in _CALENDAR and not key.startswith("when "):
                    continue
                if key.split()[-1] in ("is", "got", "was", "to"):
                    continue
                if key == "job" and (value in _NOT_JOBS or value.split()[0] in _NOT_JOBS):
                    continue
                store[key] = StoredFact(key, value, turn)
    return store


_KEY_WORDS = {"name": ("name", "called"), "city": ("city", "live", "where"), "job": ("job", "living", "work")}


def relevant_first(store: dict[str, StoredFact], question: str) -> list[StoredFact]:
    """The stored facts, those whose key words appear in ``question`` first (then newest first)."""
    q = question.lower()

    def hit(fact: StoredFact) -> bool:
        words = _KEY_WORDS.get(fact.key, tuple(w for w in fact.key.split() if w not in ("when", "favourite")))
        return any(w in q for w in words)

    return sorted(store.values(), key=lambda f: (not hit(f), -f.turn))
