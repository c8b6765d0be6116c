"""Shared-prompt computation (k samples per prompt: the prompt runs once) and the single-pass
update (one optimiser step per batch: no separate rollout log-prob pass) give the same numbers as
the plain computations they replace."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import rlhf_gym.policy as policy_mod
import rlhf_gym.ppo.rollout as rollout_mod
import rlhf_gym.ppo.trainer as trainer_mod
from rlhf_gym.policy import PolicyMeta, generate, shared_prompt_groups
from rlhf_gym.ppo.rollout import ValueHead, logprobs, logprobs_and_values
from rlhf_gym.ppo.trainer import TIMING_KEYS, train, uses_single_pass
from test_ppo import REWARD, cfg, make_policy, policy_dir  # noqa: F401  (the fixture)


def tiny_models():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                         eos_token_id=1, bos_token_id=2))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                      eos_token_id=1, bos_token_id=2, pad_token_id=0))
    return [llama.eval(), gpt2.eval()]


def batch():
    """Three distinct left-padded prompts (one of a single token), rows not grouped in order."""
    torch.manual_seed(1)
    lengths = [9, 5, 1]
    q = torch.zeros(3, 9, dtype=torch.long)
    qm = torch.zeros(3, 9, dtype=torch.long)
    for i, n in enumerate(lengths):
        q[i, 9 - n:] = torch.randint(3, 300, (n,))
        qm[i, 9 - n:] = 1
    order = torch.tensor([0, 0, 1, 2, 1, 0, 2])
    q, qm = q[order], qm[order]
    r = torch.randint(3, 300, (7, 6))
    rm = torch.ones(7, 6, dtype=torch.long)
    r[0, 4:], rm[0, 4:] = 0, 0  # a response that ended early: padding after its EOS
    return q, qm, r, rm


def test_shared_prompt_groups_map_every_row_to_its_prompt():
    q, qm, _, _ = batch()
    first, inverse = shared_prompt_groups(q, qm)
    assert len(first) == 3
    assert torch.equal(q[first][inverse], q) and torch.equal(qm[first][inverse], qm)
    assert shared_prompt_groups(q[[0, 2, 3]], qm[[0, 2, 3]]) is None  # all distinct: nothing to share
    # same tokens, different padding = different prompts
    qm2 = qm.clone()
    qm2[1, 0] = 0
    assert len(shared_prompt_groups(q, qm2)[0]) == 4


def without_sharing(monkeypatch):
    monkeypatch.setattr(rollout_mod, "shared_prompt_groups", lambda *a: None)
    monkeypatch.setattr(policy_mod, "shared_prompt_groups", lambda *a: None)


@pytest.mark.parametrize("index", [0, 1], ids=["llama", "gpt2"])
def test_logprobs_values_and_gradients_match_the_full_forward(monkeypatch, index):
    model = tiny_models()[index]
    q, qm, r, rm = batch()
    head = ValueHead(64)
    torch.nn.init.normal_(head.head.weight)

    def run():
        model.zero_grad()
        head.zero_grad()
        logp, entropy, values = logprobs_and_values(model, head, q, qm, r, rm, 0.7, with_entropy=True)
        ((logp * rm).sum() + (values * rm).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return logp.detach(), entropy, values.detach(), grads

    shared = run()
    with torch.no_grad():
        shared_plain = logprobs(model, q, qm, r, rm, 0.7)[0]
    without_sharing(monkeypatch)
    full = run()
    with torch.no_grad():
        full_plain = logprobs(model, q, qm, r, rm, 0.7)[0]
    mask = rm.bool()
    for a, b in zip(shared[:3], full[:3]):
        assert torch.allclose(a[mask], b[mask], atol=1e-5), (a - b).abs().max()
    assert torch.allclose(shared_plain[mask], full_plain[mask], atol=1e-5)
    assert torch.allclose(shared[3], full[3], atol=1e-4, rtol=1e-4), (shared[3] - full[3]).abs().max()


class CountingTokenizer:
    """Prompts are given as token ids written out ("5 6 7"): no vocabulary needed."""
    pad_token_id, eos_token_id, bos_token_id = 0, 1, 2

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("index", [0, 1], ids=["llama", "gpt2"])
def test_generate_with_repeated_prompts_matches_unshared_generation(monkeypatch, index):
    model = tiny_models()[index]
    monkeypatch.setattr(policy_mod, "encode_prompts", lambda tok, prompts, meta: [[int(t) for t in p.split()]
                                                                                  for p in prompts])
    meta = PolicyMeta(env_id="x", kind="dialogue", arch="causal", max_prompt_len=16, max_new_tokens=6)
    prompts = ["5 6 7 8 9 10", "5 6 7 8 9 10", "11", "12 13 14", "12 13 14", "11"]
    tok = CountingTokenizer()
    greedy = generate(model, tok, meta, prompts, do_sample=False)
    torch.manual_seed(3)
    sampled = generate(model, tok, meta, prompts, temperature=1.0)
    without_sharing(monkeypatch)
    assert torch.equal(greedy[2], generate(model, tok, meta, prompts, do_sample=False)[2])
    torch.manual_seed(3)
    assert torch.equal(sampled[2], generate(model, tok, meta, prompts, temperature=1.0)[2])


def strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_single_pass_update_matches_the_two_pass_update(policy_dir, tmp_path, monkeypatch, algo):  # noqa: F811
    """ppo_epochs=1 with one mini-batch: taking the rollout log-probs and values from the update's
    own forward pass changes nothing but the time (same metrics, same trained weights)."""
    config = dict(algo=algo, iterations=3, batch_size=8, mini_batch_size=8, ppo_epochs=1, rloo_k=4)
    assert uses_single_pass(cfg(policy_dir, tmp_path / "a", **config))
    single = train(cfg(policy_dir, tmp_path / "single", **config), reward_model=REWARD)
    monkeypatch.setattr(trainer_mod, "uses_single_pass", lambda c: False)
    double = train(cfg(policy_dir, tmp_path / "double", **config), reward_model=REWARD)
    assert single[-1]["kl"] != 0.0  # the policy moved: the check below compares real updates
    for a, b in zip(strip(single), strip(double)):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5, nan_ok=True), key
    from rlhf_gym.policy import load_policy

    wa = load_policy(tmp_path / "single")[0].state_dict()
    wb = load_policy(tmp_path / "double")[0].state_dict()
    # float noise only (~1e-5, Adam magnifies near-zero gradients); a different update moves
    # weights by about the learning rate (1e-2) per step
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


def test_length_chunks_are_the_cheapest_contiguous_split():
    import itertools

    rng = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(1, 7, (1,), generator=rng))
        q = torch.randint(1, 300, (n,), generator=rng)
        r = torch.randint(1, 40, (n,), generator=rng)
        cost = int(torch.randint(0, 200, (1,), generator=rng))
        chunks = rollout_mod.length_chunks(q, r, cost)
        assert sorted(torch.cat(chunks).tolist()) == list(range(n))  # every row exactly once

        def price(parts):
            return sum(len(c) * (max(q[i] for i in c) + max(r[i] for i in c)) + cost for c in parts)

        order = sorted(range(n), key=lambda i: int(q[i]))
        brute = min(price([order[a:b] for a, b in zip((0, *cuts), (*cuts, n))])
                    for k in range(n) for cuts in itertools.combinations(range(1, n), k))
        assert price([c.tolist() for c in chunks]) == brute
    # equal lengths: one chunk; a large per-chunk cost: one chunk
    assert len(rollout_mod.length_chunks(torch.full((8,), 50), torch.full((8,), 9), 0)) == 1
    assert len(rollout_mod.length_chunks(torch.tensor([10, 300]), torch.tensor([5, 5]), 10**6)) == 1
    assert len(rollout_mod.length_chunks(torch.tensor([10, 300]), torch.tensor([5, 5]), 64)) == 2


@pytest.mark.parametrize("index", [0, 1], ids=["llama", "gpt2"])
def test_length_chunked_passes_match_one_padded_pass(monkeypatch, index):
    """Rows grouped by length, each chunk trimmed of its padding: same log-probs, values and
    gradients as one pass over the whole padded batch."""
    model = tiny_models()[index]
    q, qm, r, rm = batch()
    rm[3, 2:], r[3, 2:] = 0, 0  # responses of different lengths too
    head = ValueHead(64)
    torch.nn.init.normal_(head.head.weight)

    def run(cost):
        monkeypatch.setitem(rollout_mod.CHUNK_COST_POSITIONS, "cpu", cost)
        model.zero_grad()
        logp, entropy, values = logprobs_and_values(model, head, q, qm, r, rm, 0.7, with_entropy=True)
        ((logp * rm).sum() + (values * rm).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return logp.detach(), entropy, values.detach(), grads

    assert len(rollout_mod.length_chunks(qm.sum(1), rm.sum(1), 0)) > 1  # the split really happens
    chunked, whole = run(0), run(10**9)
    mask = rm.bool()
    for a, b in zip(chunked[:3], whole[:3]):
        assert torch.allclose(a[mask], b[mask], atol=1e-5), (a - b).abs().max()
    assert torch.allclose(chunked[3], whole[3], atol=1e-4, rtol=1e-4)
