"""Data-parallel PPO/RLOO: per-sequence sampling and loss splitting (fast), and a 2-process gloo
run under `accelerate launch` against one process with the same global batch (slow)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_gym.policy import generate, load_policy
from rlhf_gym.ppo import core
from rlhf_gym.ppo.distributed import sample_seeds
from rlhf_gym.ppo.trainer import TIMING_KEYS

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "baselines" / "sft" / "translation"
PROMPTS = ["神は光あれと言われた。", "はじめに神は天と地とを創造された。", "地は形なく、むなしく",
           "夕となり、また朝となった。", "神はその光を見て、良しとされた。", "水の間に大空があって", "神は大空を造って",
           "第二日である。"]


def _responses(out):
    """Each row's generated tokens up to its mask (the padding width depends on the batch)."""
    _, _, response, rmask, texts, _ = out
    return [row[:int(m.sum())].tolist() for row, m in zip(response, rmask)], texts


def test_per_sequence_seeds_make_samples_independent_of_how_the_batch_is_split():
    model, tok, meta = load_policy(POLICY)
    seeds = sample_seeds(0, 1, range(len(PROMPTS)))
    whole = _responses(generate(model, tok, meta, PROMPTS, max_new_tokens=12, seeds=seeds))
    halves = [_responses(generate(model, tok, meta, PROMPTS[a:b], max_new_tokens=12, seeds=seeds[a:b]))
              for a, b in ((0, 4), (4, 8))]
    assert whole[0] == halves[0][0] + halves[1][0] and whole[1] == halves[0][1] + halves[1][1]
    # ... and the seeds matter: the next iteration's seeds sample other responses
    other = _responses(generate(model, tok, meta, PROMPTS, max_new_tokens=12,
                                seeds=sample_seeds(0, 2, range(len(PROMPTS)))))
    assert other[0] != whole[0]
    with pytest.raises(ValueError, match="one seed per sequence"):
        generate(model, tok, meta, PROMPTS, max_new_tokens=4, seeds=seeds[:3])


def test_per_sequence_sampling_follows_softmax_of_logits_over_temperature():
    """Gumbel-max over logits / T draws token k with probability softmax(logits / T)[k]."""
    from rlhf_gym.policy import PerSequenceSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    temperature, n = 0.7, 20000
    picks = PerSequenceSampler(range(n), temperature)(None, logits.expand(n, 4)).argmax(-1)
    counts = torch.bincount(picks, minlength=4).float()
    expected = torch.softmax(logits[0] / temperature, -1)
    assert torch.allclose(counts / n, expected, atol=0.01)


def test_ranks_partial_losses_add_up_to_the_whole_mini_batch_loss():
    g = torch.Generator().manual_seed(0)
    B, T = 6, 5
    logp, old_logp, adv = (torch.randn(B, T, generator=g) * 0.3 for _ in range(3))
    values, old_values, returns = (torch.randn(B, T, generator=g) for _ in range(3))
    mask = (torch.rand(B, T, generator=g) > 0.3).float()
    mask[:, 0] = 1
    n_tokens = mask.sum()
    whole_pg, whole_stats = core.policy_loss(logp, old_logp, adv, mask, 0.2)
    whole_vf, whole_vstats = core.value_loss(values, old_values, returns, mask, 0.2)
    parts = [(core.policy_loss(logp[s], old_logp[s], adv[s], mask[s], 0.2, n_tokens),
              core.value_loss(values[s], old_values[s], returns[s], mask[s], 0.2, n_tokens))
             for s in (slice(0, 2), slice(2, 6))]
    assert torch.allclose(sum(p[0][0] for p in parts), whole_pg)
    assert torch.allclose(sum(p[1][0] for p in parts), whole_vf)
    for key in ("clipfrac", "approxkl", "ratio"):
        assert torch.allclose(sum(p[0][1][key] for p in parts), whole_stats[key])
    assert torch.allclose(sum(p[1][1]["vf_clipfrac"] for p in parts), whole_vstats["vf_clipfrac"])
    # without the whole count each part is its own mean: the sum would be wrong
    assert not torch.allclose(sum(core.policy_loss(logp[s], old_logp[s], adv[s], mask[s], 0.2)[0]
                                  for s in (slice(0, 2), slice(2, 6))), whole_pg)


def _train_args(algo, out, single_pass=False):
    # single_pass: one optimiser step over the whole batch (the rollout log-probs come from the update's forward)
    update = ["--mini-batch-size", "8", "--ppo-epochs", "1"] if single_pass else ["--mini-batch-size", "4",
                                                                                 "--ppo-epochs", "2"]
    args = ["train", algo, "--env", "rlhf_gym/Translation-v1", "--policy", str(POLICY), "--preset", "cpu-tiny",
            "--reward", "chrf", "--iterations", "2", "--batch-size", "8", *update, "--max-new-tokens", "8", "--sampling-rng", "per-sample", "--no-progress",
            "--no-plot", "--save-every", "1", "--out", str(out)]
    return args + (["--rloo-k", "2"] if algo == "rloo" else [])


@pytest.mark.slow
@pytest.mark.parametrize("algo,single_pass", [("ppo", False), ("rloo", False), ("ppo", True), ("rloo", True)])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(algo, single_pass, tmp_path):
    """About 1-2 minutes on 2 busy cores: `accelerate launch --multi_gpu` is the multi-process
    launcher (on a machine without GPUs the ranks use gloo on CPU)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = lambda cmd: subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)  # noqa: E731
    one = run([sys.executable, "-m", "rlhf_gym.cli", *_train_args(algo, tmp_path / "one", single_pass)])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "rlhf_gym.cli", *_train_args(algo, tmp_path / "two", single_pass)])
    assert two.returncode == 0, two.stderr[-3000:]

    read = lambda run_dir, name: [json.loads(x) for x in (run_dir / name).read_text().splitlines()]  # noqa: E731
    single, ddp = read(tmp_path / "one", "metrics.jsonl"), read(tmp_path / "two", "metrics.jsonl")
    assert [m["iteration"] for m in ddp] == [1, 2]  # written once, by rank 0
    for a, b in zip(single, ddp):
        for key, value in a.items():
            if key in TIMING_KEYS or value is None:
                continue
            assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-6, nan_ok=True), (a["iteration"], key)
    # the same responses, scored the same (the rollout is exact, only the updates differ in the last bits)
    assert read(tmp_path / "one", "samples.jsonl") == read(tmp_path / "two", "samples.jsonl")
    assert [m["reward_mean"] for m in single] == [m["reward_mean"] for m in ddp]
    config = lambda run_dir: json.loads((run_dir / "ppo_config.json").read_text())  # noqa: E731
    assert config(tmp_path / "one")["world_size"] == 1 and config(tmp_path / "two")["world_size"] == 2
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    start = load_file(POLICY / "model.safetensors")
    assert any(not torch.equal(start[k], w1[k]) for k in w1)  # it trained
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6), k
