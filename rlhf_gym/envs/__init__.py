"""Environment classes and their registration under ``rlhf_gym/...`` ids.

``gymnasium.make("rlhf_gym/Dialogue-v0")`` works after ``import rlhf_gym``, and
``gymnasium.make("rlhf_gym:rlhf_gym/Dialogue-v0")`` does the import itself.
"""

from __future__ import annotations

import gymnasium

from rlhf_gym.envs.text_env import TextGenerationEnv
from rlhf_gym.envs.token_env import TokenGenerationEnv
from rlhf_gym.envs.vector import TextVectorEnv

__all__ = ["TextGenerationEnv", "TokenGenerationEnv", "TextVectorEnv", "register_envs", "register_task_envs"]


def register_task_envs(task) -> None:
    """Register a task's utterance-level and token-level ids (and, for dialogue, a multi-turn id)."""
    registry = gymnasium.envs.registration.registry
    ids = [
        (task.env_id, "rlhf_gym.envs.text_env:TextGenerationEnv", {}),
        (task.token_env_id, "rlhf_gym.envs.token_env:TokenGenerationEnv", {}),
    ]
    if task.kind == "dialogue":
        ids.append((f"rlhf_gym/{task.name}-MultiTurn-v{task.version}", "rlhf_gym.envs.text_env:TextGenerationEnv",
                    {"multi_turn": True, "max_turns": 3}))
    # No TimeLimit wrapper: the envs end episodes themselves (a response, EOS or max_new_tokens),
    # and a wrapper would flag a normal one-step episode as truncated too.
    # gymnasium.make_vec: the single-turn utterance-level ids default to the batched TextVectorEnv
    # (vector_entry_point, SAME_STEP autoreset); the token-level and multi-turn ids have no vector
    # entry point, so make_vec defaults to (and "sync"/"async" give) gymnasium's SyncVectorEnv/AsyncVectorEnv.
    for env_id, entry_point, extra in ids:
        registry.pop(env_id, None)
        single_turn_text = entry_point.endswith("TextGenerationEnv") and not extra
        gymnasium.register(
            id=env_id, entry_point=entry_point, kwargs={"task": task.env_id, **extra},
            disable_env_checker=False,
            vector_entry_point="rlhf_gym.envs.vector:TextVectorEnv" if single_turn_text else None,
        )


def register_envs() -> None:
    from rlhf_gym.tasks import (
        BUILTIN_TASKS,
        register_task,
        register_task_files_from_env,
    )

    for task in BUILTIN_TASKS:
        register_task(task, overwrite=True)
    register_task_files_from_env()  # tasks a parent process registered with --task-file
    from rlhf_gym.envs.memory import register_memory_envs

    register_memory_envs()


register_envs()
