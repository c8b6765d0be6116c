"""SmolLM2 baselines for the DialogueMemory env, as ``bench --agent`` specs.

- ``smollm2-full[,max_prompt_len=1024]``: the built-in SmolLM2-135M-Instruct policy given the whole
  conversation (the built-in ``smollm2`` agent keeps the Dialogue task's 192-token budget, about the
  last six turns; this one raises it so nothing is cut in these <= 12-exchange episodes).
- ``smollm2-window[,turns=4]``: the same policy seeing only the last ``turns`` utterances.
- ``smollm2-memory[,turns=4]``: the windowed policy plus an external store of facts extracted by
  rules from every partner turn (:mod:`rlhf_gym.memory.extract`), written into the prompt before
  the conversation, the facts matching the partner's last turn first.

All are greedy (temperature 0) unless ``temperature=`` is given, as ``smollm2``. ``policy=DIR`` puts
a trained policy (``train ppo|rloo --env rlhf_gym/DialogueMemory-v0 --history-view memory:4``
output, or a snapshot of it) in SmolLM2's place with the same prompts.
"""

from __future__ import annotations

from typing import Sequence

from rlhf_gym.agents import register_agent
from rlhf_gym.memory.view import rewrite_observation, split_conversation  # noqa: F401 (re-exported)
from rlhf_gym.policy import PolicyAgent, parse_agent_arg


class MemoryBaselineAgent(PolicyAgent):
    """SmolLM2 with a window of ``turns`` utterances (0: all) and optionally the fact store."""

    def __init__(self, turns: int = 0, facts: bool = False, max_prompt_len: int | None = None,
                 policy: str = "smollm2", **kwargs):
        super().__init__(str(policy), **kwargs)
        if turns < 0:
            raise ValueError(f"turns must be >= 0 (0 = the whole conversation), got {turns}")
        self.turns, self.facts = int(turns), bool(facts)
        if max_prompt_len:
            self.meta.max_prompt_len = int(max_prompt_len)

    def rewrite(self, observation: str) -> str:
        return rewrite_observation(observation, self.turns, self.facts)

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
