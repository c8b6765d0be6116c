"""Every PPO/RLOO hyper-parameter in one dataclass, plus named presets.

Each field is mirrored on the CLI as ``--field-name``; a preset supplies defaults and flags the
user typed override them. The resolved config is written to ``OUT/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PPOConfig:
    # what to train
    env_id: str = "rlhf_gym/Summarization-v1"
    # starting policy: "smollm2", "hf:ID_OR_PATH", or an rlhf-gym policy directory; "" = the
    # task's default (smollm2 for English tasks, the committed tiny SFT policy for translation)
    policy: str = ""
    out: str = "runs/ppo"
    algo: str = "ppo"  # "ppo" | "rloo"
    preset: str = "cpu-tiny"
    # the env's reward model, as a reward spec: builtin, judge, chrf/bleu/rougeL..., HEAD.safetensors,
    # hf:PATH_OR_ID, FILE.py:FUNCTION, or weighted sums such as "0.7*builtin+0.3*chrf"
    reward: str = "builtin"
    safety_coef: float = 0.0  # the env's safety penalty: reward -= safety_coef * unsafe(response)
    split: str = "train"
    seed: int = 0
    resume: bool = False  # continue from OUT/checkpoint (a run killed or stopped at --iterations)
    device: str = "auto"  # "auto" -> cuda if available
    threads: int | None = None  # torch CPU threads
    # schedule
    iterations: int = 40
    batch_size: int = 32  # responses per rollout (RLOO: prompts * rloo_k)
    mini_batch_size: int = 8
    grad_accum_steps: int = 1  # mini-batches accumulated per optimiser step
    ppo_epochs: int = 2
    # generation
    max_new_tokens: int | None = None  # None: the policy's default for its task
    max_prompt_len: int | None = None
    temperature: float = 1.0
    # who samples the rollouts: "hf" (transformers generate on the trained module) or "vllm" (a vLLM
    # engine in this process, the policy's weights synced into it after every update; needs vllm)
    generation_backend: str = "hf"
    vllm_gpu_memory_utilization: float = 0.3  # the GPU share vLLM may take (weights + KV cache)
    # "global": HF sampling from torch's global generator; "per-sample": response j of iteration t
    # from its own generator seeded by (seed, t, j), so splitting the batch across data-parallel
    # ranks changes no sample; "auto": per-sample when data-parallel, else global
    sampling_rng: str = "auto"
    # optimisation
    lr: float = 1e-5
    value_lr: float | None = None  # None: same as lr
    adam_eps: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # PPO
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.5
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    # KL penalty to the reference policy
    kl_coef: float = 0.05
    kl_estimator: str = "k1"  # "k1": logp - logp_ref; "k3": (r - 1) - log r with r = p_ref / p
    adaptive_kl: bool = False
    target_kl: float = 6.0  # summed over the response, the adaptive controller's target
    kl_horizon: int = 10000
    # reward shaping
    # Reward models have arbitrary offsets and scales (the built-in ones score around -20 +- 3):
    # normalise scores by a running mean/std so cliprange_value, kl_coef and the EOS penalty
    # mean the same thing for every reward model.
    score_norm: bool = True
    missing_eos_penalty: float = 1.0  # subtracted from the (normalised) score when no EOS was generated
    score_clip: float | None = None
    # RLOO
    rloo_k: int = 4
    # multi-turn envs (rlhf_gym/DialogueMemory-v1 or -v0; rlhf_gym/ppo/multiturn.py): each episode is played
    # with the policy's own replies and each trained turn is one bandit sample (observation, reply,
    # the env's reward of that turn). turns_per_episode turns of each episode train: its probe turns
    # first, then ordinary turns at random; episodes per iteration = batch_size / (turns_per_episode * k)
    turns_per_episode: int = 4
    # what the policy sees of the history: "full" (the whole observation), "window:N" (the last N
    # utterances) or "memory:N" (the last N plus the rule-based fact store, as the smollm2-memory agent)
    history_view: str = "full"
    # the replies earlier turns of a training episode get: "policy" (its own sampled replies, as at test
    # time) or "human" (the conversation's real human replies: only the trained turns are generated, so
    # an iteration costs one generation per trained turn instead of one per turn played)
    history_replies: str = "policy"
    # the training reward's weight on memory_correct at a probe turn (None: the env's default, 3.0)
    memory_weight: float | None = None
    # reference/LoRA
    lora_r: int = 0  # >0: train LoRA adapters (needs peft); the reference is the adapter-disabled base
    lora_alpha: int = 16
    # precision: "auto" -> bf16 autocast on GPUs that support it, else fp32
    dtype: str = "auto"
    # logging & checkpoints
    save_every: int = 10
    snapshot_every: int = 0  # >0: keep the policy every N iterations in OUT/snapshots/ (checkpoint selection)
    sample_rows: int = 4
    plot: bool = True
    progress: bool = True
    # processes of a data-parallel run (set by the trainer from the launcher; not a flag)
    world_size: int = dataclasses.field(default=1, metadata={"cli": False})

    def __post_init__(self):
        if self.algo not in ("ppo", "rloo"):
            raise ValueError(f"algo must be 'ppo' or 'rloo', got {self.algo!r}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of mini_batch_size {self.mini_batch_size}")
        if (self.batch_size // self.mini_batch_size) % self.grad_accum_steps:
            raise ValueError("the number of mini-batches per epoch must be a multiple of grad_accum_steps")
        if self.algo == "rloo" and (self.rloo_k < 2 or self.batch_size % self.rloo_k):
            raise ValueError(f"rloo needs rloo_k >= 2 dividing batch_size (got k={self.rloo_k}, batch={self.batch_size})")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (PPO needs a sampling policy)")
        if self.sampling_rng not in ("auto", "global", "per-sample"):
            raise ValueError(f"sampling_rng must be auto, global or per-sample, got {self.sampling_rng!r}")
        if self.generation_backend not in ("hf", "vllm"):
            raise ValueError(f"generation_backend must be 'hf' or 'vllm', got {self.generation_backend!r}")
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        if self.turns_per_episode < 1:
            raise ValueError(f"turns_per_episode must be >= 1, got {self.turns_per_episode}")
        from rlhf_gym.memory.view import parse_history_view

        parse_history_view(self.history_view)  # a clear error for a bad view now, not after loading models
        if self.history_replies not in ("policy", "human"):
            raise ValueError(f"history_replies must be 'policy' or 'human', got {self.history_replies!r}")
        if self.memory_weight is not None:
            from rlhf_gym.envs.memory import check_memory_weight

            check_memory_weight(self.memory_weight)
        if self.dtype not in ("auto", "fp32", "bf16"):
            # fp16 would need loss scaling; bf16 has fp32's range and needs none
            raise ValueError(f"dtype must be auto, fp32 or bf16, got {self.dtype!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


PRESETS: dict[str, dict] = {
    # 2 (shared) CPU cores, a ~1-3M parameter policy: ~30-50 s per iteration, ~15 min per task.
    # A from-scratch tiny policy tolerates (and needs) a much larger step than a pretrained one.
    "cpu-tiny": dict(iterations=30, batch_size=32, mini_batch_size=16, ppo_epochs=4, lr=5e-4, kl_coef=0.05,
                     vf_coef=0.5, device="auto", dtype="fp32", save_every=5),
    # SmolLM2-135M with LoRA on 2 CPU cores: about 1.5-2 minutes per iteration of 16 samples.
    "cpu-smollm2": dict(iterations=24, batch_size=16, mini_batch_size=8, ppo_epochs=2, lr=2e-4, lora_r=8,
                        lora_alpha=16, kl_coef=0.05, vf_coef=0.1, max_new_tokens=40, device="auto", dtype="fp32",
                        save_every=2, snapshot_every=4),
    # a single GPU and a 100M-1B policy.
    "gpu": dict(iterations=200, batch_size=128, mini_batch_size=32, grad_accum_steps=1, ppo_epochs=4, lr=1e-6,
                kl_coef=0.05, device="auto", dtype="auto", save_every=20),
}


def make_config(preset: str = "cpu-tiny", **overrides) -> PPOConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(sorted(PRESETS))}")
    fields = {f.name for f in dataclasses.fields(PPOConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown PPO option(s): {', '.join(sorted(unknown))}")
    return PPOConfig(**{**PRESETS[preset], "preset": preset, **overrides})
