"""SFT: prompt masking, a real (tiny) fine-tuning run on the translation pack, exact resume."""

import json

import pytest
import torch

from rlhf_gym.policy import (POLICY_META, PolicyMeta, SFTConfig, _sft_batch, _sft_encode, load_policy,
                             parse_agent_arg, train_sft)
from rlhf_gym.tokenizer import load_tokenizer

ENV = "rlhf_gym/Translation-v0"


def tiny_cfg(out, **kw):
    base = dict(env_id=ENV, out=str(out), max_steps=6, batch_size=4, lr=3e-3, warmup_steps=1, save_every=2,
                eval_examples=8, n_layer=1, n_embd=32, n_head=2, max_prompt_len=24, max_response_len=16)
    return SFTConfig(**{**base, **kw})


def test_prompt_tokens_are_masked_out_of_the_loss():
    from rlhf_gym.data import Example

    tok = load_tokenizer()
    meta = PolicyMeta(env_id=ENV, kind="translation", arch="causal", max_prompt_len=5)
    ex = [Example(id="1", prompt="one two three four five six seven eight", references=("yes",))]
    (prompt, response), = _sft_encode(ex, tok, meta, max_response_len=8)
    assert len(prompt) == 5  # truncated from the left
    assert tok.decode(prompt).endswith("\n") and response[-1] == tok.eos_token_id
    batch = _sft_batch([(prompt, response)], tok, seq2seq=False)
    labels = batch["labels"][0]
    assert (labels[:5] == -100).all() and labels[5:].tolist() == response


def test_sft_trains_saves_and_resumes_exactly(tmp_path):
    out = train_sft(tiny_cfg(tmp_path / "full"))
    meta = json.loads((out / POLICY_META).read_text())
    assert meta["kind"] == "translation" and meta["info"]["sft_steps"] == 6
    model, _, loaded = load_policy(out)
    assert loaded.max_prompt_len == 24 and not model.training
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    # a run stopped by its time limit leaves a usable policy and a state to resume from
    part = tmp_path / "part"
    train_sft(tiny_cfg(part, stop_after=3))  # stopped mid-schedule, between checkpoints
    assert (part / "sft_state.pt").exists()
    assert json.loads((part / POLICY_META).read_text())["info"]["sft_steps"] == 3
    train_sft(tiny_cfg(part))
    assert not (part / "sft_state.pt").exists()
    a, b = load_policy(out)[0].state_dict(), load_policy(part)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = meta["info"]["train_loss_last50"]
    assert losses < 9.0  # below the uniform-distribution loss ln(8192) = 9.01


def test_resume_with_other_settings_is_refused(tmp_path):
    train_sft(tiny_cfg(tmp_path / "x", time_limit_min=1e-9))
    with pytest.raises(ValueError, match="different configuration"):
        train_sft(tiny_cfg(tmp_path / "x", lr=1e-2))


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown env id"):
        train_sft(tiny_cfg(tmp_path / "y", env_id="rlhf_gym/Nope-v0"))
    with pytest.raises(FileNotFoundError, match="policy directory"):
        load_policy(tmp_path)
    assert parse_agent_arg("dir,n=8,temperature=0.5,reward=chrf") == ("dir", {"n": 8, "temperature": 0.5,
                                                                              "reward": "chrf"})
    with pytest.raises(ValueError, match="key=value"):
        parse_agent_arg("dir,oops")
