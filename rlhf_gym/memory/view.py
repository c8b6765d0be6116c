"""What a policy sees of a DialogueMemory conversation: the whole observation, a window of the
last utterances, or the window plus the rule-based fact store. One place for the bench agents
(``smollm2-window``, ``smollm2-memory``) and the multi-turn trainer (``--history-view``), so a
policy trained with a view is benched with the same prompts."""

from __future__ import annotations

import re

from rlhf_gym.memory.extract import extract_facts, relevant_first

_UTTERANCE = re.compile(r"\n(?=[AB]:)")
HISTORY_VIEWS = ("full", "window:N", "memory:N")


def split_conversation(observation: str) -> tuple[str, list[str]]:
    """(topic line or "", utterance lines "A: ..."/"B: ...") of a dialogue observation; the final
    bare ``B:`` tag is dropped."""
    parts = _UTTERANCE.split(observation)
    head = parts[0] if parts and parts[0].startswith("Topic:") else ""
    lines = parts[1:] if head else parts
    if lines and lines[-1].strip() in ("A:", "B:"):
        lines = lines[:-1]
    return head, lines


def rewrite_observation(observation: str, turns: int = 0, facts: bool = False) -> str:
    """The last ``turns`` utterances (0: all) after the topic line, with the fact store first when
    ``facts``; ends with ``B:``."""
    head, lines = split_conversation(observation)
    window = lines[-turns:] if turns else lines
    parts = [head] if head else []
    if facts:
        partner = [line[3:] for line in lines if line.startswith("A:")]
        store = extract_facts(partner)
        if store:
            ordered = relevant_first(store, partner[-1] if partner else "")
            parts.append("What A has told you so far (the latest is right): "
                         + " ".join(f.sentence() for f in ordered))
    parts.extend(window)
    parts.append("B:")
    return "\n".join(parts)


def parse_history_view(view: str) -> tuple[int, bool] | None:
    """``"full"`` -> None (the observation unchanged); ``"window:N"`` -> (N, False);
    ``"memory:N"`` -> (N, True)."""
    if view == "full":
        return None
    kind, sep, n = view.partition(":")
    if kind in ("window", "memory") and sep and n.isdigit() and int(n) >= 1:
        return int(n), kind == "memory"
    raise ValueError(f"history_view must be one of {', '.join(HISTORY_VIEWS)} (N >= 1), got {view!r}")


def view_function(view: str):
    """``observation -> prompt`` for a history view."""
    parsed = parse_history_view(view)
    if parsed is None:
        return lambda observation: observation
    turns, facts = parsed
    return lambda observation: rewrite_observation(observation, turns, facts)
