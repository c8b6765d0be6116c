"""Sampling follows softmax(logits / T) exactly: a model's saved generation_config (top_k, top_p,
repetition penalty, min_p...) must not leak into rollouts, whose log-probs are recomputed from
the raw logits."""

import json

import numpy as np
import pytest
import torch

from rlhf_gym.policy import PolicyMeta, generate

WORDS = ["<eos>", "<pad>", "red", "green", "blue", "cat", "dog", "sun", "moon", "tree"]
PROMPT = "red cat sun"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A randomly initialised 10-token causal LM whose saved generation_config asks for
    near-greedy decoding with every kind of logits processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_lm")
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", bos_token="<eos>", pad_token="<pad>",
                                  unk_token="<pad>", padding_side="left")
    torch.manual_seed(3)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=0, bos_token_id=0, pad_token_id=1))
    with torch.no_grad():  # spread the next-token distribution over several tokens
        model.transformer.wte.weight.mul_(5.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # Written by hand: save_pretrained refuses sampling flags next to do_sample=False, but
    # published checkpoints do carry such files.
    (out / "generation_config.json").write_text(json.dumps({
        "do_sample": False, "temperature": 0.3, "top_k": 1, "top_p": 0.5, "repetition_penalty": 5.0,
        "min_p": 0.3, "no_repeat_ngram_size": 1, "eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 1}))
    return out


def _load(path):
    from transformers import AutoModelForCausalLM

    from rlhf_gym.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    assert model.generation_config.top_k == 1 and model.generation_config.repetition_penalty == 5.0
    return model, load_tokenizer(str(path))


def _next_token_probs(model, tok, temperature=1.0):
    ids = torch.tensor([tok(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    return torch.softmax(logits / temperature, -1).numpy()


def _frequencies(token_ids, vocab=len(WORDS)):
    return np.bincount(np.asarray(token_ids), minlength=vocab) / len(token_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_policy_sampling_matches_softmax_despite_saved_generation_config(tiny_dir, temperature):
    model, tok = _load(tiny_dir)
    meta = PolicyMeta(env_id="rlhf_gym/Dialogue-v0", kind="dialogue", arch="causal", prompt_suffix="",
                      max_prompt_len=16, max_new_tokens=1)
    probs = _next_token_probs(model, tok, temperature)
    assert (probs > 0.05).sum() >= 4, probs  # the test needs a spread-out distribution

    torch.manual_seed(0)
    _, _, response, _, _, _ = generate(model, tok, meta, [PROMPT], max_new_tokens=1, temperature=temperature,
                                       do_sample=True, num_return_sequences=4000)
    freq = _frequencies(response[:, 0])
    tv = 0.5 * np.abs(freq - probs).sum()
    assert tv < 0.05, (tv, freq.round(3), probs.round(3))
    assert (freq > 0.02).sum() >= 4
    # the model's own config is back in place after the call
    assert model.generation_config.top_k == 1


def test_greedy_policy_decoding_is_the_argmax(tiny_dir):
    model, tok = _load(tiny_dir)
    meta = PolicyMeta(env_id="rlhf_gym/Dialogue-v0", kind="dialogue", arch="causal", prompt_suffix="",
                      max_prompt_len=16, max_new_tokens=1)
    probs = _next_token_probs(model, tok)
    _, _, response, _, _, _ = generate(model, tok, meta, [PROMPT], max_new_tokens=1, do_sample=False)
    assert int(response[0, 0]) == int(probs.argmax())


def test_hf_agent_sampling_matches_softmax(tiny_dir):
    from rlhf_gym.agents import HFModelAgent

    agent = HFModelAgent(str(tiny_dir), max_new_tokens=1, batch_size=4000, temperature=1.0, device="cpu", seed=0)
    probs = _next_token_probs(agent.model, agent.tokenizer)
    texts = agent.act([PROMPT] * 4000)
    # <eos> and <pad> both decode to "" (special tokens are skipped): compare them as one outcome
    ids = [WORDS.index(t) if t else 0 for t in texts]
    probs = np.concatenate([[probs[0] + probs[1], 0.0], probs[2:]])
    tv = 0.5 * np.abs(_frequencies(ids) - probs).sum()
    assert tv < 0.05, tv

    greedy = HFModelAgent(str(tiny_dir), max_new_tokens=1, temperature=0.0, device="cpu")
    assert greedy.act([PROMPT]) == [WORDS[int(probs.argmax())]]
    assert WORDS[int(probs.argmax())] in PROMPT.split()  # what the saved repetition penalty would have banned
