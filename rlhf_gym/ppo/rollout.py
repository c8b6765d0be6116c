"""Rollouts shared by PPO, RLOO and best-of-n, through the batched vector env.

``env.reset(options={"indices": ...})`` gives the prompts, one batched ``generate`` (KV cache,
left-padded prompts) answers them, and ``env.step(responses)`` returns the env's reward (reward
model + safety penalty) with every component: the reward that trains is the reward ``bench``
reports. The trainer adds only what it alone knows (per-token KL to its reference, values,
the missing-EOS penalty), so nothing is counted twice. Then one batched forward pass per model
gives temperature-scaled log-probs and values at the response tokens."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from rlhf_gym.envs.text_env import fit_action
from rlhf_gym.policy import (PolicyMeta, cache_argument, generate, is_seq2seq, prefill_shared_prompts,
                             shared_prompt_groups, split_lm)
from rlhf_gym.ppo.core import entropy_from_logits


@dataclass
class Rollout:
    prompts: list[str]
    references: list[tuple[str, ...]]
    query: torch.Tensor  # [B, Q] left-padded
    query_mask: torch.Tensor
    response: torch.Tensor  # [B, T], pad after EOS
    response_mask: torch.Tensor  # 1 up to and including EOS
    texts: list[str]  # decoded, truncated at EOS
    has_eos: torch.Tensor  # [B] bool
    raw_scores: torch.Tensor  # the env's reward (reward model + safety penalty), before shaping
    scores: torch.Tensor  # after normalisation, the missing-EOS penalty and clipping
    components: dict[str, np.ndarray] = field(default_factory=dict)  # the env's reward components
    example_ids: list[str] = field(default_factory=list)


def sample(policy, tokenizer, meta: PolicyMeta, prompts: Sequence[str], *, max_new_tokens: int,
           temperature: float, num_return_sequences: int = 1, seeds: Sequence[int] | None = None,
           generation=None):
    """Sampled responses as :func:`rlhf_gym.policy.generate` returns them: from HF generate on
    ``policy``, or from ``generation.sample`` (a vLLM engine holding the policy's weights)."""
    if generation is not None:
        if num_return_sequences != 1:
            raise ValueError("the vLLM backend takes repeated prompts, not num_return_sequences")
        return generation.sample(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seeds=seeds)
    was_training = policy.training
    policy.eval()
    out = generate(policy, tokenizer, meta, list(prompts), max_new_tokens=max_new_tokens,
                   temperature=temperature, do_sample=True, num_return_sequences=num_return_sequences, seeds=seeds)
    policy.train(was_training)
    return out


class RunningMoments:
    """Mean and std of every score seen so far (Chan et al.'s parallel Welford update)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.double()
        n, mean, m2 = x.numel(), float(x.mean()), float(((x - x.mean()) ** 2).sum())
        delta, total = mean - self.mean, self.n + n
        self.mean += delta * n / total
        self.m2 += m2 + delta ** 2 * self.n * n / total
        self.n = total

    @property
    def std(self) -> float:
        return (self.m2 / max(self.n - 1, 1)) ** 0.5

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + 1e-8) if self.n > 1 else x - self.mean

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.n, self.mean, self.m2 = state["n"], state["mean"], state["m2"]


def shape_scores(raw: torch.Tensor, has_eos: torch.Tensor, missing_eos_penalty: float = 0.0,
                 score_clip: float | None = None, moments: RunningMoments | None = None) -> torch.Tensor:
    """Normalised (when ``moments`` is given, updated with this batch first) minus the
    missing-EOS penalty, optionally clipped."""
    shaped = raw
    if moments is not None:
        moments.update(raw)
        shaped = moments.normalize(raw).float()
    shaped = shaped - missing_eos_penalty * (~has_eos).float()
    if score_clip is not None:
        shaped = shaped.clamp(-score_clip, score_clip)
    return shaped


def score(reward_model, prompts, texts, references, has_eos, missing_eos_penalty: float = 0.0,
          score_clip: float | None = None, moments: RunningMoments | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, shaped) scores from ONE batched reward-model call on the EOS-truncated texts."""
    raw = torch.as_tensor(np.asarray(reward_model(list(prompts), list(texts), [tuple(r) for r in references]),
                                     dtype=np.float64), dtype=torch.float32)
    return raw, shape_scores(raw, has_eos, missing_eos_penalty, score_clip, moments)


def env_step_components(info: dict) -> dict[str, np.ndarray]:
    """The numeric per-slot reward components of a SAME_STEP vector env's ``final_info``."""
    final = info.get("final_info", {})
    out = {}
    for key, value in final.items():
        if key.startswith("_") or key in ("index", "turn"):  # bookkeeping, not reward
            continue
        arr = np.asarray(value)
        if arr.dtype.kind in "fb":
            out[key] = arr.astype(np.float64)
    return out


def collect(policy, tokenizer, meta, env, indices: Sequence[int], *, max_new_tokens: int, temperature: float,
            missing_eos_penalty: float = 0.0, score_clip: float | None = None,
            moments: RunningMoments | None = None, seeds: Sequence[int] | None = None,
            generation=None) -> Rollout:
    """One rollout through ``env`` (a ``TextVectorEnv`` with ``len(indices)`` slots): reset on the
    named examples, generate (``seeds``: one generator per response; ``generation``: another
    backend's ``sample``, e.g. :class:`rlhf_gym.ppo.vllm_generation.VLLMGeneration`, instead of
    HF generate on ``policy``), step, shape."""
    prompts, info = env.reset(options={"indices": [int(i) for i in indices]})
    prompts = list(prompts)
    query, qmask, response, rmask, texts, has_eos = sample(policy, tokenizer, meta, prompts,
                                                           max_new_tokens=max_new_tokens, temperature=temperature,
                                                           seeds=seeds, generation=generation)
    limit = env.task.max_response_chars
    texts = [fit_action(t, limit) for t in texts]  # the log-probs still cover every generated token
    _, reward, _, _, step_info = env.step(texts)
    raw = torch.as_tensor(np.asarray(reward, dtype=np.float64), dtype=torch.float32)
    shaped = shape_scores(raw, has_eos, missing_eos_penalty, score_clip, moments)
    references = [tuple(r) for r in info["references"]]
    return Rollout(prompts, references, query, qmask, response, rmask, texts, has_eos, raw, shaped,
                   env_step_components(step_info), [str(x) for x in info["example_id"]])


# ------------------------------------------------------------------ forward passes


def _hidden_and_head(model, query, qmask, response, rmask, output_hidden: bool = False, output_logits: bool = True):
    """(hidden, logits) aligned with response tokens: position t predicts response[:, t]. Each is
    None unless asked for; the LM head runs only on the response positions."""
    T = response.shape[1]
    if is_seq2seq(model):
        start = model.config.decoder_start_token_id
        dec_in = torch.cat([torch.full_like(response[:, :1], start), response[:, :-1]], 1)
        dec_mask = torch.cat([torch.ones_like(rmask[:, :1]), rmask[:, :-1]], 1)
        out = model(input_ids=query, attention_mask=qmask, decoder_input_ids=dec_in,
                    decoder_attention_mask=dec_mask, output_hidden_states=output_hidden)
        return (out.decoder_hidden_states[-1] if output_hidden else None), out.logits
    parts = split_lm(model)
    if parts is not None:
        body, head = parts
        hidden = _response_hidden(body, query, qmask, response, rmask)
        return hidden, (head(hidden) if output_logits else None)
    ids = torch.cat([query, response], 1)
    mask = torch.cat([qmask, rmask], 1)
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # left padding: positions count real tokens only
    Q = query.shape[1]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=output_hidden)
    hidden = out.hidden_states[-1][:, Q - 1:Q - 1 + T] if output_hidden else None
    return hidden, out.logits[:, Q - 1:Q - 1 + T]


# A forward pass over one more chunk is worth this many padded token positions saved: on a CPU
# the cost of a pass is nearly proportional to its positions; a GPU needs large batches to be busy.
CHUNK_COST_POSITIONS = {"cpu": 64, "cuda": 8192}


def length_chunks(query_lengths, response_lengths, chunk_cost: int) -> list[torch.Tensor]:
    """Rows split into chunks of similar length, so that each chunk is padded only to its own
    longest prompt and response: the split of the rows sorted by prompt length into contiguous
    chunks that minimises padded positions + ``chunk_cost`` per chunk (dynamic programming).

    Left-padded prompts of mixed lengths otherwise cost the longest prompt's positions on every
    row (8 SmolLM2 dialogue prompts: ~1.5x the real tokens)."""
    q = query_lengths.tolist()
    r = response_lengths.tolist()
    order = sorted(range(len(q)), key=lambda i: q[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest split of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest_response = 0
        for i in range(j, 0, -1):  # chunk = sorted rows i-1 .. j-1
            longest_response = max(longest_response, r[order[i - 1]])
            cost = best[i - 1] + (j - i + 1) * (q[order[j - 1]] + longest_response) + chunk_cost
            if cost <= best[j]:  # ties: the longer chunk (fewer passes)
                best[j], cut[j] = cost, i - 1
    chunks, j = [], n
    while j > 0:
        chunks.append(torch.tensor(order[cut[j]:j], device=query_lengths.device))
        j = cut[j]
    return chunks[::-1]


def _response_hidden(body, query, qmask, response, rmask):
    """Decoder states predicting each response token ([B, T, H]; position t predicts
    response[:, t]), computed chunk by chunk with each chunk's padding trimmed (zeros where a
    chunk's responses are shorter than T: masked positions)."""
    T = response.shape[1]
    q_lengths, r_lengths = qmask.sum(1), rmask.sum(1)
    chunks = length_chunks(q_lengths, r_lengths, CHUNK_COST_POSITIONS.get(query.device.type, 8192))
    pieces = []
    for rows in chunks:
        q_len = max(1, int(q_lengths[rows].max()))
        t_len = max(1, int(r_lengths[rows].max()))
        hidden = _untrimmed_response_hidden(body, query[rows, -q_len:], qmask[rows, -q_len:],
                                            response[rows, :t_len], rmask[rows, :t_len])
        pieces.append(torch.nn.functional.pad(hidden, (0, 0, 0, T - t_len)))
    return torch.cat(pieces)[torch.argsort(torch.cat(chunks))]


def _untrimmed_response_hidden(body, query, qmask, response, rmask):
    T, Q = response.shape[1], query.shape[1]
    mask = torch.cat([qmask, rmask], 1)
    # Left padding: positions must count real tokens only, exactly as generate() did.
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    groups = shared_prompt_groups(query, qmask)
    if groups is None:
        ids = torch.cat([query, response], 1)
        return body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, Q - 1:Q - 1 + T]
    # k responses per prompt: the prompt runs once per distinct prompt, the responses attend
    # to its shared keys/values (the same attention, a fraction of the compute)
    prefix, cache = prefill_shared_prompts(body, query, qmask, groups)
    tail = body(input_ids=response, attention_mask=mask, position_ids=pos[:, Q:], use_cache=True,
                **{cache_argument(body): cache}).last_hidden_state
    return torch.cat([prefix.last_hidden_state[:, -1:][groups[1]], tail[:, :T - 1]], 1)


def _logp_from_logits(logits, response, temperature: float, with_entropy: bool):
    logits = logits.float() / temperature
    logp = torch.gather(torch.log_softmax(logits, -1), 2, response.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp, None
    with torch.no_grad():  # a diagnostic, never in a loss: no graph over [batch, tokens, vocab]
        return logp, entropy_from_logits(logits)


def logprobs(model, query, qmask, response, rmask, temperature: float, with_entropy: bool = False):
    """Log-probs of the response tokens under logits / temperature (the sampling distribution)."""
    _, logits = _hidden_and_head(model, query, qmask, response, rmask)
    return _logp_from_logits(logits, response, temperature, with_entropy)


def logprobs_and_values(model, value_head: "ValueHead", query, qmask, response, rmask, temperature: float,
                        with_entropy: bool = False):
    """Log-probs and values from ONE forward pass of a policy whose value head reads its own
    hidden states (the LoRA setting: one copy of the base weights for everything)."""
    hidden, logits = _hidden_and_head(model, query, qmask, response, rmask, output_hidden=True)
    logp, entropy = _logp_from_logits(logits, response, temperature, with_entropy)
    return logp, entropy, value_head(hidden)


def _hidden_size(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return config.hidden_size


class ValueHead(nn.Module):
    """A scalar head over hidden states. Starts at zero, so initial values are 0 and the first
    updates are driven by the returns, not by a random critic."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, hidden):
        return self.head(hidden.float()).squeeze(-1)


class ValueModel(nn.Module):
    """A value head on its own copy of the policy's transformer (full fine-tuning: the critic's
    gradients never touch the policy's weights)."""

    def __init__(self, policy):
        super().__init__()
        import copy

        self.backbone = copy.deepcopy(policy)
        self.value_head = ValueHead(_hidden_size(self.backbone))

    @property
    def head(self):
        return self.value_head.head

    def forward(self, query, qmask, response, rmask):
        hidden, _ = _hidden_and_head(self.backbone, query, qmask, response, rmask, output_hidden=True,
                                     output_logits=False)
        return self.value_head(hidden)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (weights and optimiser state stay fp32); a no-op elsewhere."""
    if device.type != "cuda" or dtype == "fp32" or (dtype == "auto" and not torch.cuda.is_bf16_supported()):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)
