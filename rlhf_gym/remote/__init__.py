"""Environments as a service: ``rlhf-gym serve-env`` (:mod:`rlhf_gym.remote.server`, needs the
``server`` extra) and :class:`RemoteEnv`, its ``gymnasium.Env`` client (standard library only).
The wire format is in :mod:`rlhf_gym.remote.protocol` and docs/serving.md."""

from rlhf_gym.remote.client import RemoteEnv, RemoteEnvError

__all__ = ["RemoteEnv", "RemoteEnvError"]
