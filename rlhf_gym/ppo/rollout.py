"""Rollouts shared by PPO, RLOO and best-of-n: one batched ``generate`` (KV cache, left-padded
prompts), one batched reward-model call, and one batched forward pass per model to get
temperature-scaled log-probs and values at the response tokens."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from rlhf_gym.policy import PolicyMeta, generate, is_seq2seq, split_lm
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
    raw_scores: torch.Tensor  # reward model, before shaping
    scores: torch.Tensor  # after the missing-EOS penalty / clipping


def sample(policy, tokenizer, meta: PolicyMeta, prompts: Sequence[str], *, max_new_tokens: int,
           temperature: float, num_return_sequences: int = 1):
    was_training = policy.training
    policy.eval()
    out = generate(policy, tokenizer, meta, list(prompts), max_new_tokens=max_new_tokens,
                   temperature=temperature, do_sample=True, num_return_sequences=num_return_sequences)
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


def score(reward_model, prompts, texts, references, has_eos, missing_eos_penalty: float = 0.0,
          score_clip: float | None = None, moments: RunningMoments | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, shaped) scores from ONE batched reward-model call on the EOS-truncated texts;
    shaped = normalised (when ``moments`` is given, updated with this batch first) minus the
    missing-EOS penalty, optionally clipped."""
    raw = torch.as_tensor(np.asarray(reward_model(list(prompts), list(texts), [tuple(r) for r in references]),
                                     dtype=np.float64), dtype=torch.float32)
    shaped = raw
    if moments is not None:
        moments.update(raw)
        shaped = moments.normalize(raw).float()
    shaped = shaped - missing_eos_penalty * (~has_eos).float()
    if score_clip is not None:
        shaped = shaped.clamp(-score_clip, score_clip)
    return raw, shaped


def collect(policy, tokenizer, meta, reward_model, prompts, references, *, max_new_tokens: int, temperature: float,
            missing_eos_penalty: float = 0.0, score_clip: float | None = None,
            moments: RunningMoments | None = None) -> Rollout:
    query, qmask, response, rmask, texts, has_eos = sample(policy, tokenizer, meta, prompts,
                                                           max_new_tokens=max_new_tokens, temperature=temperature)
    raw, shaped = score(reward_model, prompts, texts, references, has_eos, missing_eos_penalty, score_clip,
                        moments)
    return Rollout(list(prompts), [tuple(r) for r in references], query, qmask, response, rmask, texts, has_eos,
                   raw, shaped)


# ------------------------------------------------------------------ forward passes


def _hidden_and_head(model, query, qmask, response, rmask, output_hidden: bool = False):
    """Hidden states aligned with response tokens: position t predicts response[:, t]."""
    T = response.shape[1]
    if is_seq2seq(model):
        start = model.config.decoder_start_token_id
        dec_in = torch.cat([torch.full_like(response[:, :1], start), response[:, :-1]], 1)
        dec_mask = torch.cat([torch.ones_like(rmask[:, :1]), rmask[:, :-1]], 1)
        out = model(input_ids=query, attention_mask=qmask, decoder_input_ids=dec_in,
                    decoder_attention_mask=dec_mask, output_hidden_states=True)
        return out.decoder_hidden_states[-1], out.logits
    ids = torch.cat([query, response], 1)
    mask = torch.cat([qmask, rmask], 1)
    # Left padding: positions must count real tokens only, exactly as generate() did.
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    Q = query.shape[1]
    parts = split_lm(model)
    if parts is not None:
        body, head = parts
        hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, Q - 1:Q - 1 + T]
        return hidden, (None if output_hidden else head(hidden))
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=output_hidden)
    hidden = out.hidden_states[-1][:, Q - 1:Q - 1 + T] if output_hidden else None
    return hidden, out.logits[:, Q - 1:Q - 1 + T]


def logprobs(model, query, qmask, response, rmask, temperature: float, with_entropy: bool = False):
    """Log-probs of the response tokens under logits / temperature (the sampling distribution)."""
    _, logits = _hidden_and_head(model, query, qmask, response, rmask)
    logits = logits.float() / temperature
    logp = torch.gather(torch.log_softmax(logits, -1), 2, response.unsqueeze(-1)).squeeze(-1)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logp, entropy


class ValueModel(nn.Module):
    """A scalar head on a copy of the policy's transformer (no LM head needed).

    The head starts at zero, so initial values are 0 and the first updates are driven by the
    returns, not by a random critic.
    """

    def __init__(self, policy):
        super().__init__()
        import copy

        self.backbone = copy.deepcopy(policy)
        hidden = self.backbone.config.get_text_config().hidden_size if hasattr(self.backbone.config, "get_text_config") \
            else self.backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, query, qmask, response, rmask):
        hidden, _ = _hidden_and_head(self.backbone, query, qmask, response, rmask, output_hidden=True)
        return self.head(hidden.float()).squeeze(-1)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on CUDA (weights and optimiser state stay fp32); a no-op elsewhere."""
    if device.type != "cuda" or dtype == "fp32" or (dtype == "auto" and not torch.cuda.is_bf16_supported()):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)
