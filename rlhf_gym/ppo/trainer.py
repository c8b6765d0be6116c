"""The PPO (and RLOO) training loop, readable top to bottom.

One iteration:
  1. draw ``batch_size`` prompts (RLOO: batch_size / k prompts, k samples each) and ``reset`` the
     vector env on them (multi-turn envs: draw episodes and play them turn by turn, each trained turn
     one bandit sample; ``rlhf_gym/ppo/multiturn.py``);
  2. one batched generate -> responses truncated at EOS; ``env.step(responses)`` -> the env's
     reward (reward model + safety penalty, every component logged), then the trainer's own
     shaping (running normalisation, missing-EOS penalty);
  3. no-grad forward passes: policy log-probs, reference log-probs, values (PPO); with LoRA the
     reference is the adapter-disabled base and the critic a head on the policy's hidden states;
  4. per-token rewards = -beta * KL + score at the last token; GAE -> advantages, returns
     (RLOO: leave-one-out baseline on the KL-penalised sequence reward, whitened per sequence);
  5. ppo_epochs x mini-batches (x grad accumulation) of clipped policy and value updates;
  6. KL controller update, logging, checkpoint.

Launched on N processes (``accelerate launch``), it trains data-parallel: each rank rolls out
its 1/N of the batch and trains on its 1/N of every mini-batch, and everything in between is
computed over the gathered global batch (``rlhf_gym/ppo/distributed.py``). For one process
every ``dp`` call below passes its input through.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rlhf_gym.policy import default_policy_spec
from rlhf_gym.ppo import core
from rlhf_gym.ppo.config import PPOConfig
from rlhf_gym.ppo.distributed import DataParallel, TrainForward, sample_seeds
from rlhf_gym.ppo.multiturn import EpisodePool, collect_turns, is_multi_turn_env, multi_turn_metrics, policy_env_id
from rlhf_gym.ppo.rollout import RunningMoments, ValueModel, autocast, collect, logprobs, logprobs_and_values
from rlhf_gym.ppo.rollout import shape_scores

METRIC_KEYS = ("iteration", "reward_mean", "score_mean", "unsafe_fraction", "rlhf_reward", "kl", "entropy", "policy_loss", "value_loss", "clipfrac",
               "approxkl", "explained_variance", "response_length", "eos_fraction", "kl_coef",
               "tokens_per_second", "samples_per_second")
TIMING_KEYS = ("tokens_per_second", "samples_per_second", "time_rollout", "time_weight_sync", "time_update", "time_iteration",
               "peak_memory_mb")


def _device(cfg: PPOConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _rng_state(np_rng: np.random.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_jsonl(path: Path, max_iteration: int) -> None:
    """Drop lines a killed run wrote after its last checkpoint, so a resumed log has no duplicates."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line)["iteration"] <= max_iteration]
    path.write_text("".join(line + "\n" for line in keep))


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocator peak on a GPU, max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PolicyParts:
    """What the loop needs from a policy, for full fine-tuning and for LoRA alike.

    - ``lm``: the module whose forward/generate is the current policy;
    - ``ref_logprobs(...)``: the frozen starting policy (LoRA: the same weights with the adapter
      disabled, so there is ONE copy of the base weights; full: a frozen deep copy);
    - ``values(...)`` / ``logp_values(...)``: the critic (LoRA: a head on the policy's own hidden
      states, one forward for both; full: a value head on its own copy of the transformer).
    """

    def __init__(self, policy, cfg: PPOConfig, device: torch.device, with_value: bool):
        from rlhf_gym.ppo.rollout import ValueHead, _hidden_size

        self.cfg, self.lora = cfg, cfg.lora_r > 0
        if self.lora:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as err:
                raise ImportError("--lora-r needs `pip install peft`") from err
            self.peft = get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                          target_modules="all-linear"))
            self.lm = self.peft.get_base_model()  # LoRA layers live inside it: its forward is the policy
            self.ref = None
            self.value_head = ValueHead(_hidden_size(self.lm)).to(device) if with_value else None
            self.value_model = None
        else:
            import copy

            self.peft, self.lm = None, policy
            self.ref = copy.deepcopy(policy).eval().requires_grad_(False)
            self.value_head = None
            self.value_model = ValueModel(policy).to(device) if with_value else None

    def policy_params(self):
        return [p for p in self.lm.parameters() if p.requires_grad]

    def value_params(self):
        if self.value_head is not None:
            return list(self.value_head.parameters())
        return list(self.value_model.parameters()) if self.value_model is not None else []

    @property
    def head(self):
        """The critic's linear output layer (its bias is set to the first batch's mean score)."""
        return self.value_head.head if self.value_head is not None else self.value_model.head

    def ref_logprobs(self, *args):
        if self.lora:
            with self.peft.disable_adapter():
                return logprobs(self.lm, *args, self.cfg.temperature)[0]
        return logprobs(self.ref, *args, self.cfg.temperature)[0]

    def logp_values(self, q, qm, r, rm, with_entropy: bool = False):
        """(logp, entropy, values): values None without a critic."""
        if self.value_head is not None:
            return logprobs_and_values(self.lm, self.value_head, q, qm, r, rm, self.cfg.temperature, with_entropy)
        logp, entropy = logprobs(self.lm, q, qm, r, rm, self.cfg.temperature, with_entropy)
        return logp, entropy, (self.value_model(q, qm, r, rm) if self.value_model is not None else None)

    def trainable_state(self) -> dict:
        """What a checkpoint must hold: LoRA: only the adapters (the base never changes)."""
        state = self.lm.state_dict()
        if self.lora:
            state = {k: v for k, v in state.items() if "lora_" in k}
        return state

    def load_trainable_state(self, state: dict) -> None:
        missing = self.lm.load_state_dict(state, strict=not self.lora)
        del missing

    def critic_state(self):
        return (self.value_head or self.value_model).state_dict() if (self.value_head or self.value_model) else None

    def load_critic_state(self, state) -> None:
        if state is not None:
            (self.value_head or self.value_model).load_state_dict(state)

    def train(self, mode: bool = True) -> None:
        self.lm.train(mode)


def _unsafe_fraction(components: dict, prompts, texts) -> float:
    """Share of the rollout's responses flagged unsafe: by the env's safety penalty when it has
    one, else by the default safety check (logged on every run, penalised or not)."""
    if "unsafe_flagged" in components:
        return float(np.mean(components["unsafe_flagged"]))
    from rlhf_gym.rewards.safety import flagged, load_safety_check

    check = load_safety_check()
    return float(np.mean(flagged(check, check(list(prompts), list(texts), None))))


def make_env(cfg: PPOConfig, reward_model=None, num_envs: int | None = None):
    """The batched env the run rolls out through (``num_envs`` slots, default the batch size):
    the env's reward (reward model given by ``cfg.reward`` or ``reward_model``, plus the safety
    penalty) is the training reward."""
    from rlhf_gym.envs.vector import TextVectorEnv

    num_envs = num_envs or cfg.batch_size
    rm = reward_model if reward_model is not None else (None if cfg.reward == "builtin" else cfg.reward)
    penalties = {"safety_coef": cfg.safety_coef} if cfg.safety_coef else {}
    if is_multi_turn_env(cfg.env_id):
        return EpisodePool(cfg.env_id, num_envs, episodes_per_iteration(cfg), cfg.split, rm,
                           memory_weight=cfg.memory_weight, **penalties)
    return TextVectorEnv(cfg.env_id, num_envs=num_envs, split=cfg.split, reward_model=rm, **penalties)


def uses_single_pass(cfg: PPOConfig) -> bool:
    """One optimiser step on the whole batch (TRL's GRPO/RLOO default): the policy that rolled out
    is the one being updated, so the update's own forward pass gives the rollout log-probs, entropy
    and values (detached), and the separate no-grad pass over the batch is skipped. The update is
    the same as with that pass (the ratio is 1 either way); one forward pass fewer per iteration."""
    return cfg.ppo_epochs == 1 and cfg.mini_batch_size == cfg.batch_size and cfg.grad_accum_steps == 1


def episodes_per_iteration(cfg: PPOConfig) -> int:
    """Multi-turn envs: episodes one iteration plays (each gives turns_per_episode x k samples)."""
    per_episode = cfg.turns_per_episode * (cfg.rloo_k if cfg.algo == "rloo" else 1)
    if cfg.batch_size % per_episode:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of turns_per_episode x k = {per_episode} "
                         f"(each episode gives that many samples)")
    return cfg.batch_size // per_episode


def train(cfg: PPOConfig, reward_model: Any | None = None, callback: Callable[[dict], None] | None = None,
          env=None) -> list[dict]:
    """Run PPO/RLOO as configured; returns the per-iteration metrics (also in OUT/metrics.jsonl).

    Rollouts go through ``env`` (default: a ``TextVectorEnv`` of ``cfg.env_id`` with
    ``cfg.batch_size`` slots, or this rank's share of them); ``reward_model`` (any reward spec or
    callable) replaces the env's default reward model.
    """
    from rlhf_gym.policy import resolve_policy
    from rlhf_gym.rewards.encoding import place_on_device
    from rlhf_gym.rloo import rloo_advantages

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint" / "state.pt"
    device = _device(cfg)
    dp = DataParallel(device.type)
    device = dp.device or device
    cfg.world_size = dp.world_size
    if cfg.sampling_rng == "auto":
        cfg.sampling_rng = "per-sample" if dp.world_size > 1 else "global"
    if dp.world_size > 1:
        dp.check(cfg.batch_size, cfg.mini_batch_size)
        if cfg.sampling_rng != "per-sample":
            raise ValueError("data-parallel runs need --sampling-rng per-sample (or auto): with torch's global "
                             "generator every rank would draw the same random numbers")
    if ckpt_path.exists() and not cfg.resume:
        raise ValueError(f"{out} already holds a run (checkpoint/state.pt): pass --resume to continue it, "
                         "or choose another --out")
    if dp.is_main:
        out.mkdir(parents=True, exist_ok=True)

    multi_turn = is_multi_turn_env(cfg.env_id)
    if multi_turn and dp.world_size > 1:
        raise ValueError("multi-turn envs train in one process (data-parallel rollouts are single-turn only)")
    if multi_turn and cfg.sampling_rng == "per-sample":
        raise ValueError("multi-turn rollouts sample from torch's global generator: use --sampling-rng global or auto")
    policy, tok, meta = resolve_policy(cfg.policy or None, policy_env_id(cfg.env_id), str(device))
    if cfg.max_prompt_len:
        meta.max_prompt_len = cfg.max_prompt_len
    max_new_tokens = cfg.max_new_tokens or meta.max_new_tokens
    local_batch = cfg.batch_size // dp.world_size
    env = env if env is not None else make_env(cfg, reward_model, local_batch)
    # the env's reward encoders run where the policy runs: a GPU trainer is not left waiting on CPU encoding
    place_on_device(getattr(getattr(env, "reward_fn", None), "reward_model", None), device)
    if env.num_envs != local_batch:
        raise ValueError(f"the env has {env.num_envs} slots, this process rolls out {local_batch} "
                         f"(batch_size {cfg.batch_size} over {dp.world_size} processes)")
    n_examples = len(env.examples)
    if not n_examples:
        raise ValueError(f"no examples in split {cfg.split!r} of {cfg.env_id}")

    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    random.seed(cfg.seed)
    use_value = cfg.algo == "ppo"
    parts = PolicyParts(policy, cfg, device, with_value=use_value)
    params = [{"params": parts.policy_params(), "lr": cfg.lr}]
    if use_value:
        params.append({"params": parts.value_params(), "lr": cfg.value_lr or cfg.lr})
    opt = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    kl_ctl = (core.AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
              else core.FixedKLController(cfg.kl_coef))

    moments = RunningMoments() if cfg.score_norm else None
    start_iter, history = 0, []
    if cfg.resume and not ckpt_path.exists():
        print(f"--resume: no checkpoint in {out}, starting from iteration 0")
    if cfg.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False, map_location=device)
        # may differ between slices of one run (per-sample sampling makes the world size free too)
        free = ("iterations", "progress", "plot", "resume", "threads", "world_size", "generation_backend",
                "vllm_gpu_memory_utilization")
        # a run saved before sampling_rng existed sampled from the global generator
        # (and before the multi-turn fields existed, which single-turn runs ignore: their defaults)
        saved = {"sampling_rng": "global", "turns_per_episode": 4, "history_view": "full", "history_replies": "policy",
                 "memory_weight": None, **{k: v for k, v in state["config"].items() if k not in free}}
        now = {k: v for k, v in cfg.to_json().items() if k not in free}
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise ValueError(f"{ckpt_path} was written with different settings ({', '.join(diff)}); "
                             "use the same options to resume, or another --out")
        parts.load_trainable_state(state["policy"])
        parts.load_critic_state(state["value"])
        opt.load_state_dict(state["optimizer"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        if moments is not None:
            moments.load_state_dict(state["moments"])
        _set_rng_state(state["rng"], np_rng)
        start_iter, history = state["iteration"], state["history"]
        if dp.is_main:
            for name in ("metrics.jsonl", "samples.jsonl"):
                _truncate_jsonl(out / name, start_iter)
            print(f"resuming from iteration {start_iter}")
    elif dp.is_main:
        for name in ("metrics.jsonl", "samples.jsonl"):
            (out / name).unlink(missing_ok=True)
    if dp.is_main:
        cfg.save(out / "ppo_config.json")
    train_forward, opt = dp.prepare(TrainForward(parts), opt)  # DDP averages the update's gradients over ranks
    base_spec = cfg.policy or default_policy_spec(policy_env_id(cfg.env_id))

    def checkpoint(iteration: int) -> None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"config": cfg.to_json(), "iteration": iteration, "history": history,
                    "policy": parts.trainable_state(), "value": parts.critic_state(),
                    "optimizer": opt.state_dict(), "kl_ctl": kl_ctl.state_dict(), "rng": _rng_state(np_rng),
                    "moments": moments.state_dict() if moments is not None else None}, tmp)
        tmp.replace(ckpt_path)  # atomic: a kill never leaves half a checkpoint

    def save_current(path: Path, iteration: int) -> None:
        meta.trained_by = cfg.algo
        meta.info = {"base_policy": str(base_spec), "iteration": iteration, "config": cfg.to_json(),
                     "final": {k: history[-1].get(k) for k in METRIC_KEYS} if history else {}}
        save_trained_policy(parts, tok, meta, path)

    bar = None
    if cfg.progress and dp.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, initial=start_iter, desc=f"{cfg.algo} {meta.kind}", dynamic_ncols=True)
    n_prompts = cfg.batch_size // cfg.rloo_k if cfg.algo == "rloo" else cfg.batch_size
    if multi_turn:
        from rlhf_gym.memory.view import view_function

        n_prompts, view = episodes_per_iteration(cfg), view_function(cfg.history_view)
    repeat = cfg.rloo_k if cfg.algo == "rloo" else 1
    mb, accum = cfg.mini_batch_size, cfg.grad_accum_steps
    generation = None
    if cfg.generation_backend == "vllm":  # built after a resume has loaded the trained weights
        from rlhf_gym.ppo.vllm_generation import VLLMGeneration

        generation = VLLMGeneration(parts.lm, tok, meta, max_new_tokens=max_new_tokens, dtype=cfg.dtype,
                                    gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, seed=cfg.seed,
                                    device=device)
    single_pass = uses_single_pass(cfg)

    for iteration in range(start_iter + 1, cfg.iterations + 1):
        t0 = time.perf_counter()
        t_sync = 0.0
        if generation is not None and not generation.synced:
            generation.sync(parts.lm)  # the last update's weights, before they sample (counted in time_rollout)
            t_sync = time.perf_counter() - t0
        # ---- 1-2. rollout through the env: reset on the drawn prompts, generate, step
        idx = np_rng.choice(n_examples, size=n_prompts, replace=n_examples < n_prompts)
        examples = [int(i) for i in idx for _ in range(repeat)]
        mine = dp.share(cfg.batch_size)  # this rank's part of the global batch (all of it for one process)
        seeds = (sample_seeds(cfg.seed, iteration, range(cfg.batch_size))[mine]
                 if cfg.sampling_rng == "per-sample" else None)
        with torch.no_grad(), autocast(device, cfg.dtype):
            if multi_turn:  # the drawn episodes played turn by turn; k replies per trained turn
                ro = collect_turns(parts.lm, tok, meta, env, [int(i) for i in idx], k=repeat,
                                   turns_per_episode=cfg.turns_per_episode, view=view,
                                   history_replies=cfg.history_replies, generation=generation,
                                   max_new_tokens=max_new_tokens, temperature=cfg.temperature, rng=np_rng)
            else:
                ro = collect(parts.lm, tok, meta, env, examples[mine], max_new_tokens=max_new_tokens,
                             temperature=cfg.temperature, seeds=seeds, generation=generation)
        ro = dp.gather_rollout(ro, tok.pad_token_id)
        # shaped over the global batch: the running moments see every rank's scores
        ro.scores = shape_scores(ro.raw_scores, ro.has_eos, cfg.missing_eos_penalty, cfg.score_clip, moments)
        q, qm, r, rm = (t.to(device) for t in (ro.query, ro.query_mask, ro.response, ro.response_mask))
        mask = rm.float()
        scores = ro.scores.to(device)
        t_gen = time.perf_counter()

        if use_value and iteration == 1:
            # Without score_norm, reward models have arbitrary offsets (the built-in ones score
            # around -20); a zero critic would need many clipped value steps to get there.
            with torch.no_grad():
                parts.head.bias.fill_(float(scores.mean()))

        # ---- 3. log-probs under the rollout policy and the reference, values (each rank its share)
        update_forward = None
        if single_pass:
            parts.train(True)
            with autocast(device, cfg.dtype):
                update_forward = train_forward(q[mine], qm[mine], r[mine], rm[mine], with_entropy=True)
            old_logp, entropy, old_values = update_forward
            old_logp, old_values = old_logp.detach(), (old_values.detach() if use_value else None)
        else:
            with torch.no_grad(), autocast(device, cfg.dtype):
                old_logp, entropy, old_values = parts.logp_values(q[mine], qm[mine], r[mine], rm[mine],
                                                                  with_entropy=True)
        with torch.no_grad(), autocast(device, cfg.dtype):
            ref_logp = parts.ref_logprobs(q[mine], qm[mine], r[mine], rm[mine])
        old_logp, entropy, ref_logp = dp.gather(old_logp), dp.gather(entropy), dp.gather(ref_logp)
        old_logp, ref_logp = old_logp * mask, ref_logp * mask
        old_values = dp.gather(old_values) * mask if use_value else None

        # ---- 4. rewards and advantages
        kl = core.kl_estimate(old_logp, ref_logp, cfg.kl_estimator) * mask
        beta = kl_ctl.value
        if use_value:
            rewards = core.per_token_rewards(scores, kl, mask, beta)
            if cfg.whiten_rewards:
                rewards = core.masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = core.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = core.masked_whiten(advantages, mask)
        else:
            # One advantage per sequence, whitened over sequences (not over tokens after
            # broadcasting, which would weigh long responses more), then given to every token.
            seq_adv = rloo_advantages(scores - beta * kl.sum(1), cfg.rloo_k, whiten=cfg.whiten_advantages)
            advantages = seq_adv.unsqueeze(1) * mask
            returns = None

        # ---- 5. PPO epochs
        parts.train(True)
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "approxkl",
                                                          "vf_clipfrac", "ratio")}
        for _epoch in range(cfg.ppo_epochs):
            # drawn in every mode, so a run's prompt draws do not depend on single_pass
            perm = torch.from_numpy(np_rng.permutation(cfg.batch_size)).to(device)
            for k, start in enumerate(range(0, cfg.batch_size, mb)):
                # this rank's share of the mini-batch; losses are token means over the WHOLE
                # mini-batch, so the ranks' parts add up to it (and DDP's average, x world_size)
                i = perm[start:start + mb][dp.share(mb)]
                n_tokens = mask[perm[start:start + mb]].sum()
                if update_forward is not None:  # the whole batch, already forwarded in step 3
                    i = torch.arange(cfg.batch_size, device=device)[mine]
                    new_logp, _, new_values = update_forward
                else:
                    with autocast(device, cfg.dtype):
                        new_logp, _, new_values = train_forward(q[i], qm[i], r[i], rm[i])
                with autocast(device, cfg.dtype):
                    pg_loss, pg_stats = core.policy_loss(new_logp, old_logp[i], advantages[i], mask[i], cfg.cliprange,
                                                         n_tokens)
                    loss = pg_loss
                    if use_value:
                        vf_loss, vf_stats = core.value_loss(new_values, old_values[i], returns[i], mask[i],
                                                            cfg.cliprange_value, n_tokens)
                        loss = loss + cfg.vf_coef * vf_loss
                        stats["value_loss"].append(vf_loss.item())
                        stats["vf_clipfrac"].append(float(vf_stats["vf_clipfrac"]))
                dp.backward(loss * dp.world_size / accum)
                if (k + 1) % accum == 0:
                    dp.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.max_grad_norm)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                stats["policy_loss"].append(pg_loss.item())
                for key in ("clipfrac", "approxkl", "ratio"):
                    stats[key].append(float(pg_stats[key]))
        parts.train(False)
        if generation is not None:
            generation.synced = False  # the weights moved: the engine's copy is stale
        stats = {key: dp.sum(values, device) for key, values in stats.items()}  # add up the ranks' parts
        t_end = time.perf_counter()

        # ---- 6. KL control, logging, checkpoint
        mean_kl = float(kl.sum(1).mean())
        kl_ctl.update(mean_kl, cfg.batch_size)
        n_tokens = float(mask.sum())
        comp = ro.components
        metrics = {
            "iteration": iteration,
            "reward_mean": float(ro.raw_scores.mean()),
            "score_mean": float(np.mean(comp["score"])) if "score" in comp else float(ro.raw_scores.mean()),
            "unsafe_fraction": _unsafe_fraction(comp, ro.prompts, ro.texts),
            "safety_penalty_mean": float(np.mean(comp["safety_penalty"])) if "safety_penalty" in comp else 0.0,
            "score_shaped": float(scores.mean()),
            "rlhf_reward": float((scores - beta * kl.sum(1)).mean()),
            "kl": mean_kl,
            "kl_k3": float((core.kl_estimate(old_logp, ref_logp, "k3") * mask).sum(1).mean()),
            "entropy": float(core.masked_mean(entropy, mask)),
            "policy_loss": float(np.mean(stats["policy_loss"])),
            "value_loss": float(np.mean(stats["value_loss"])) if use_value else float("nan"),
            "clipfrac": float(np.mean(stats["clipfrac"])),
            "approxkl": float(np.mean(stats["approxkl"])),
            "ratio": float(np.mean(stats["ratio"])),
            "explained_variance": core.explained_variance(old_values, returns, mask) if use_value else float("nan"),
            "response_length": float(mask.sum(1).mean()),
            "eos_fraction": float(ro.has_eos.float().mean()),
            "distinct_responses": len(set(ro.texts)) / len(ro.texts),
            "kl_coef": beta,
            "tokens_per_second": n_tokens / (t_end - t0),
            "samples_per_second": cfg.batch_size / (t_end - t0),
            "time_rollout": t_gen - t0,
            "time_weight_sync": t_sync,  # vLLM backend: loading the updated weights into the engine
            "time_update": t_end - t_gen,
            "time_iteration": t_end - t0,
            "peak_memory_mb": _peak_memory_mb(device),
            **multi_turn_metrics(comp),
        }
        history.append(metrics)
        if callback is not None:
            callback(metrics)
        if not dp.is_main:
            continue  # rank 0 writes the logs, samples, snapshots and checkpoints
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        rows = [{"iteration": iteration, "example_id": ro.example_ids[j] if ro.example_ids else None,
                 "prompt": ro.prompts[j][-300:], "response": ro.texts[j],
                 "score": float(ro.raw_scores[j]), "eos": bool(ro.has_eos[j])}
                for j in range(min(cfg.sample_rows, len(ro.texts)))]
        with open(out / "samples.jsonl", "a") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", kl=f"{mean_kl:.2f}",
                            len=f"{metrics['response_length']:.0f}")
        if cfg.snapshot_every and iteration % cfg.snapshot_every == 0:
            # kept policies for checkpoint selection on validation and over-optimisation curves
            save_current(out / "snapshots" / f"iter_{iteration:05d}", iteration)
        if iteration % cfg.save_every == 0 or iteration == cfg.iterations:
            checkpoint(iteration)
            if cfg.progress:
                _print_samples(rows, iteration)
    if bar is not None:
        bar.close()

    if dp.is_main:
        save_current(out, cfg.iterations)
        if use_value:
            torch.save(parts.critic_state(), out / "value_model.pt")
        if cfg.plot:
            plot_curves(history, out / "curves.png", title=f"{cfg.algo.upper()} {cfg.env_id}")
    dp.barrier()  # no rank returns before rank 0 has written the run
    return history


def save_trained_policy(parts: PolicyParts, tok, meta, path: Path) -> Path:
    """A policy directory ``ppo:DIR`` agents load: LoRA runs save only the adapter (megabytes)
    and name the base policy in the metadata; full runs save the whole model."""
    from rlhf_gym.policy import honour_safetensors_modes, save_policy

    if not parts.lora:
        return save_policy(parts.lm, tok, meta, path)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts.peft.save_pretrained(str(path))
    meta.save(path)
    honour_safetensors_modes(path)
    return path


def _print_samples(rows: list[dict], iteration: int) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a core dependency
        return
    table = Table(title=f"samples @ iteration {iteration}", show_lines=True)
    for col in ("prompt (end)", "response", "score"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["prompt"][-120:], row["response"][:200], f"{row['score']:.3f}")
    Console(stderr=True).print(table)


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path | None:
    """Reward and KL per iteration (matplotlib is optional: no plot without it)."""
    if not history:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot (pip install rlhf-gym[plot])")
        return None
    it = [h["iteration"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(it, [h["reward_mean"] for h in history], label="reward-model score (raw)")
    # rlhf_reward is in the trainer's (possibly normalised) units, so it gets its own axis
    twin = axes[0].twinx()
    twin.plot(it, [h["rlhf_reward"] for h in history], color="tab:orange", alpha=0.6,
              label="score - beta*KL - EOS penalty (right)")
    axes[0].set_title("reward")
    lines = axes[0].get_lines() + twin.get_lines()
    axes[0].legend(lines, [ln.get_label() for ln in lines], fontsize=7)
    axes[1].plot(it, [h["kl"] for h in history], color="tab:red")
    axes[1].set_title("KL(policy || reference), k1, summed over tokens")
    axes[2].plot(it, [h["response_length"] for h in history], color="tab:green")
    axes[2].set_title("response length (tokens)")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
