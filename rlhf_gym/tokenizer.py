"""The project's own byte-level BPE tokenizer, trained on the built-in training splits.

Token-level environments and the offline default policies need a tokenizer that exists without
the model hub. ``rlhf-gym train-tokenizer`` rebuilds the committed one exactly (BPE training in
`tokenizers` is deterministic for the same corpus and settings).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterator

TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
DEFAULT_VOCAB_SIZE = 8192


def training_corpus() -> Iterator[str]:
    """Prompts and references of every built-in pack's train split, in a fixed order."""
    from rlhf_gym.data import BUILTIN_PACKS, chitchat_conversations, split_of

    for pack, load in BUILTIN_PACKS.items():
        for example in load("train"):
            yield example.prompt
            yield from example.references
    # every turn of training conversations, not only the one each example asks for
    for conv in chitchat_conversations():
        if split_of(f"chitchat:{conv['id']}") == "train":
            yield from conv["turns"]


def train_tokenizer(out_dir: str | Path = TOKENIZER_DIR, vocab_size: int = DEFAULT_VOCAB_SIZE) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _as_hf(tokenizer).save_pretrained(out_dir)
    return out_dir


def _as_hf(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        unk_token=None, padding_side="left", model_max_length=1024,
    )


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None):
    """The committed project tokenizer, or any HF tokenizer by local path / hub id.

    Padding is on the left: generation appends to the right of the prompt.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path or TOKENIZER_DIR))
    if path is None:
        # Callers cut prompts to the model's context themselves (keeping head and tail), so the
        # tokenizer's own length warning would only be noise.
        tok.model_max_length = 1 << 30
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok
