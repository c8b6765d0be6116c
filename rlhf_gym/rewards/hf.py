"""Any Hugging Face sequence-classification model as a reward model.

``HFRewardModel("OpenAssistant/reward-model-deberta-v3-large-v2")`` or a local directory. The
model reads ``prompt`` and ``response`` as a text pair (the usual reward-model input for
encoder classifiers) or, with ``pair_input=False``, the concatenation ``prompt + response`` (the
usual input for decoder reward models). The score is ``logits[:, label_index]``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


_DECODERS = {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "opt"}


class HFRewardModel:
    def __init__(self, path_or_hub_id: str | Path, *, label_index: int = 0, batch_size: int = 16,
                 max_length: int = 512, pair_input: bool | None = None, device: str = "cpu",
                 revision: str | None = None, name: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rlhf_gym.policy import load_hf_config

        source = str(path_or_hub_id)
        # a hub id loads through the normal hub cache; HF_HUB_OFFLINE=1 makes it cache-only
        if revision is None:
            load_hf_config(source)  # a missing folder or uncached id: one clear error, not transformers' OSError
        self.tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        self.model = AutoModelForSequenceClassification.from_pretrained(source, revision=revision).to(device).eval()
        n_labels = self.model.config.num_labels
        if not 0 <= label_index < n_labels:
            raise ValueError(f"label_index {label_index} out of range for a model with {n_labels} labels")
        if self.tokenizer.pad_token is None:
            # decoder classifiers (GPT-2 style) ship without a pad token; EOS is the standard stand-in
            if self.tokenizer.eos_token is None:
                raise ValueError(f"{source}: tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.label_index = label_index
        self.batch_size = batch_size
        self.max_length = min(max_length, getattr(self.tokenizer, "model_max_length", max_length) or max_length)
        if pair_input is None:
            decoder = getattr(self.model.config, "is_decoder", False) or self.model.config.model_type in _DECODERS
            pair_input = not decoder
        self.pair_input = pair_input
        if not pair_input:
            # decoder classifiers score the last token: truncate from the left so the response
            # end survives; pad on the right, where they look for the last non-pad token
            self.tokenizer.truncation_side = "left"
            self.tokenizer.padding_side = "right"
        self.device = device
        self.name = name or f"hf:{source}"
        digest = hashlib.sha256(source.encode())
        digest.update(str(revision or getattr(self.model.config, "_commit_hash", "") or "").encode())
        local = Path(source)
        if local.is_dir():
            for weights in sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin")):
                digest.update(weights.read_bytes())
        self.sha256 = digest.hexdigest()

    def to(self, device) -> "HFRewardModel":
        """Run the classifier on ``device`` from now on."""
        from rlhf_gym.rewards.encoding import resolve_device

        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str],
                 references: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        n = len(responses)
        if len(prompts) != n:
            raise ValueError(f"{self.name}: got {len(prompts)} prompts for {n} responses")
        scores = np.zeros(n, dtype=np.float64)
        # sort by length so each batch pads little; results go back to input order
        order = sorted(range(n), key=lambda i: len(prompts[i]) + len(responses[i]))
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.pair_input:
                batch = self.tokenizer([prompts[i] for i in idx], [responses[i] for i in idx], padding=True,
                                       truncation="longest_first", max_length=self.max_length, return_tensors="pt")
            else:
                batch = self.tokenizer([prompts[i] + responses[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = self.model(**batch).logits
            scores[idx] = logits[:, self.label_index].double().cpu().numpy()
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{self.name}: non-finite score")
        return scores
