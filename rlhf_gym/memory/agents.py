"""SmolLM2 baselines for the DialogueMemory env, as ``bench --agent`` specs.

- ``smollm2-full[,max_prompt_len=1024]``: the built-in SmolLM2-135M-Instruct policy given the whole
  conversation (the built-in ``smollm2`` agent keeps the Dialogue task's 192-token budget, about the
  last six turns; this one raises it so nothing is cut in these <= 12-exchange episodes).
- ``smollm2-window[,turns=4]``: the same policy seeing only the last ``turns`` utterances.
- ``smollm2-memory[,turns=4]``: the windowed policy plus an external store of facts extracted by
  rules from every partner turn (:mod:`rlhf_gym.memory.extract`), written into the prompt before
  the conversation, the facts matching the partner's last turn first.

All are greedy (temperature 0) unless ``temperature=`` is given, as ``smollm2``.
"""

from __future__ import annotations

import re
from typing import Sequence

from rlhf_gym.agents import register_agent
from rlhf_gym.memory.extract import extract_facts, relevant_first
from rlhf_gym.policy import PolicyAgent, parse_agent_arg

_UTTERANCE = re.compile(r"\n(?=[AB]:)")


def split_conversation(observation: str) -> tuple[str, list[str]]:
    """(topic line or "", utterance lines "A: ..."/"B: ...") of a dialogue observation; the final
    bare ``B:`` tag is dropped."""
    parts = _UTTERANCE.split(observation)
    head = parts[0] if parts and parts[0].startswith("Topic:") else ""
    lines = parts[1:] if head else parts
    if lines and lines[-1].strip() in ("A:", "B:"):
        lines = lines[:-1]
    return head, lines


class MemoryBaselineAgent(PolicyAgent):
    """SmolLM2 with a window of ``turns`` utterances (0: all) and optionally the fact store."""

    def __init__(self, turns: int = 0, facts: bool = False, max_prompt_len: int | None = None, **kwargs):
        super().__init__("smollm2", **kwargs)
        if turns < 0:
            raise ValueError(f"turns must be >= 0 (0 = the whole conversation), got {turns}")
        self.turns, self.facts = int(turns), bool(facts)
        if max_prompt_len:
            self.meta.max_prompt_len = int(max_prompt_len)

    def rewrite(self, observation: str) -> str:
        head, lines = split_conversation(observation)
        window = lines[-self.turns:] if self.turns else lines
        parts = [head] if head else []
        if self.facts:
            partner = [line[3:] for line in lines if line.startswith("A:")]
            store = extract_facts(partner)
            if store:
                ordered = relevant_first(store, partner[-1] if partner else "")
                parts.append("What A has told you so far (the latest is right): "
                             + " ".join(f.sentence() for f in ordered))
        parts.extend(window)
        parts.append("B:")
        return "\n".join(parts)

    def act(self, observations: Sequence[str], infos=None) -> list[str]:
        return super().act([self.rewrite(o) for o in observations], infos)


def _factory(default_name: str, **defaults):
    def make(arg: str, task):
        _, kwargs = parse_agent_arg(f"x,{arg}" if arg else "x")
        options = {**defaults, **kwargs}
        name = default_name + (f",{arg}" if arg else "")
        return MemoryBaselineAgent(env_id=task.env_id, name=name, **options)
    return make


register_agent("smollm2-full", _factory("smollm2-full", turns=0, max_prompt_len=1024))
register_agent("smollm2-window", _factory("smollm2-window", turns=4))
register_agent("smollm2-memory", _factory("smollm2-memory", turns=4, facts=True))
