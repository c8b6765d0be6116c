"""Agents: anything that turns a batch of observations into a batch of responses.

The whole protocol is one method::

    class ShoutAgent:
        name = "shout"
        def act(self, observations, infos):
            return [obs.splitlines()[-1].upper() for obs in observations]

``infos`` are the env's reset infos (``example_id``, ``references``, ``source``); honest agents
ignore ``references``. ``rlhf-gym bench --agent SPEC`` builds an agent from a spec string:
``reference``, ``lead``, ``retrieval``, ``pad[:SPEC]`` (SPEC's output, the reference by default,
padded with filler up to the env's length limit: a length-hacking probe), ``padsrc[:SPEC]``
(SPEC's output followed by 0..3 more sentences of the example's source, a seeded number per
prompt: a verbosity probe whose extra text is on topic), ``smollm2`` (the
built-in SmolLM2-135M-Instruct policy),
``hf:PATH_OR_HUB_ID``, a registered prefix such as ``ppo:OUT_DIR`` or ``bon:smollm2,n=4``, or
``package.module:ClassName`` / ``path/to/file.py:ClassName`` for your own. Model agents take
options after commas: ``smollm2,temperature=0.7,seed=1``, ``hf:PATH,temperature=0.7``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from rlhf_gym.data import Example


@runtime_checkable
class Agent(Protocol):
    name: str

    def act(self, observations: Sequence[str], infos: Sequence[dict[str, Any]]) -> list[str]: ...


# A sentence ends at . ! or ? followed by whitespace and a capital, digit, quote or bracket.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _first_sentence(text: str) -> str:
    match = _SENTENCE_BREAK.search(text)
    return text[: match.start()].strip() if match else text.strip()


def split_sentences(text: str) -> list[str]:
    """``text``'s sentences (the rule lead-1 uses: the first of them is :func:`_first_sentence`)."""
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s.strip()]


class ReferenceAgent:
    """Returns the first human reference: the sanity upper bound (BLEU and ROUGE of 100)."""

    name = "reference"

    def act(self, observations, infos):
        return [info["references"][0] for info in infos]


class LeadAgent:
    """The classic no-learning baselines, by task: lead-1 (first sentence of the article) for
    summarisation, copy the source for translation, echo the partner's last turn for dialogue.
    Cut to the env's action limit (a few partner turns are longer than a reply may be), so the
    baseline is always a valid action."""

    name = "lead"

    def __init__(self, kind: str | None = None, max_response_chars: int | None = None):
        self.kind, self.max_response_chars = kind, max_response_chars

    def act(self, observations, infos):
        out = []
        for info in infos:
            source = info.get("source", "")
            text = _first_sentence(source) if self.kind == "summarization" else source
            if self.max_response_chars is not None and len(text) > self.max_response_chars:
                text = text[:self.max_response_chars].rsplit(" ", 1)[0] or text[:self.max_response_chars]
            out.append(text)
        return out


# Content-free sentences, all different (a looped filler is caught by the gold judge's repetition
# check; distinct sentences are the harder case for a judge).
FILLER_SENTENCES = (
    "I hope this helps.",
    "Let me know if you have any other questions.",
    "There is a lot more that could be said about this.",
    "In short, these are the main points to keep in mind.",
    "Thank you for taking the time to read this far.",
    "Of course, every situation is a little different.",
    "It is worth thinking about this carefully.",
    "To put it another way, that is the gist of it.",
    "Many people have asked similar questions before.",
    "As always, the details matter a great deal here.",
    "This is, broadly speaking, how things stand.",
    "Further discussion is always welcome.",
)


def pad_text(text: str, max_chars: int) -> str:
    """``text`` followed by filler sentences, in order, while the result fits in ``max_chars``
    (a ``text`` already over the limit is cut to it: the result is always a valid action)."""
    text = text[:max_chars]
    for sentence in FILLER_SENTENCES:
        candidate = f"{text} {sentence}" if text else sentence
        if len(candidate) <= max_chars:
            text = candidate
    return text


class PadAgent:
    """A length-hacking probe: another agent's output (the human reference by default) padded
    with content-free filler up to the env's action-length limit. A judge that rewards length
    prefers it to the unpadded output; a length-controlled win rate should not."""

    def __init__(self, base: "Agent", max_chars: int, name: str | None = None):
        self.base, self.max_chars = base, int(max_chars)
        self.name = name or f"pad:{getattr(base, 'name', 'agent')}"

    def act(self, observations, infos):
        return [pad_text(text, self.max_chars) for text in self.base.act(observations, infos)]


def padding_count(seed: int, example_id: str, max_extra: int) -> int:
    """How many sentences :class:`SourcePadAgent` adds for one prompt: uniform on 0..max_extra,
    drawn from ``(seed, example id)`` only, so it does not depend on batching or order."""
    digest = hashlib.sha256(f"{int(seed)}:{example_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (int(max_extra) + 1)


def pad_with_sentences(text: str, sentences: Sequence[str], count: int, max_chars: int) -> str:
    """``text`` followed by the first ``count`` of ``sentences`` that it does not already contain
    and that still fit in ``max_chars`` (one that would not fit is skipped, the next tried); a
    ``text`` over the limit is cut to it, so the result is always a valid action."""
    text, added = text[:max_chars], 0
    for sentence in sentences:
        if added >= count:
            break
        if not sentence or sentence in text:
            continue
        candidate = f"{text} {sentence}" if text else sentence
        if len(candidate) <= max_chars:
            text, added = candidate, added + 1
    return text


class SourcePadAgent:
    """A verbosity probe with on-topic padding: another agent's output (the human reference by
    default) followed by ``k`` sentences of the example's source (summarisation: the abstract,
    from its start; dialogue: the partner's last turn; translation: the Japanese verse), the
    ones the output does not already contain, as many as fit in the env's limit. ``k`` is drawn
    per prompt, uniformly from 0..``max_extra`` (:func:`padding_count`), so the padded length
    varies from prompt to prompt (with some prompts unpadded) and a length-controlled win rate can
    tell length from quality: a judge that rewards the extra text makes the raw rate rise with
    ``k``; the LC rate (the rate at equal length) should not.

    Spec: ``padsrc[:SPEC][,max_extra=K][,pad_seed=S]`` (defaults 3 and 0; SPEC's own options,
    e.g. ``padsrc:smollm2,temperature=0.7``, stay with SPEC)."""

    def __init__(self, base: "Agent", max_chars: int, max_extra: int = 3, pad_seed: int = 0, name: str | None = None):
        from rlhf_gym.winrate import is_sampling

        if int(max_extra) < 0:
            raise ValueError(f"padsrc: max_extra must be >= 0, got {max_extra}")
        self.base, self.max_chars, self.max_extra, self.pad_seed = base, int(max_chars), int(max_extra), int(pad_seed)
        self.name = name or f"padsrc:{getattr(base, 'name', 'agent')}"
        # the padding is fixed by pad_seed; only a sampling base makes the outputs seed-dependent
        self.deterministic = not is_sampling(base)

    @property
    def seed(self):
        """The base agent's sampling seed (``bench --seeds`` sets it there); not the padding's."""
        return self.base.seed

    @seed.setter
    def seed(self, value):
        self.base.seed = value

    def bind_env(self, scorer):
        """Agents that score candidates with the env's reward (best-of-n) still get the env."""
        if hasattr(self.base, "bind_env"):
            self.base.bind_env(scorer)

    def act(self, observations, infos):
        out = []
        for text, info in zip(self.base.act(observations, infos), infos):
            if "example_id" not in info:
                raise ValueError("padsrc needs the env's infos (example_id, source) for every observation")
            count = padding_count(self.pad_seed, str(info["example_id"]), self.max_extra)
            out.append(pad_with_sentences(text, split_sentences(info.get("source", "")), count, self.max_chars))
        return out


SOURCE_PAD_OPTIONS = ("max_extra", "pad_seed")


def _source_pad_agent(arg: str, task, device: str | None = None) -> SourcePadAgent:
    """``padsrc[:SPEC][,max_extra=K][,pad_seed=S]``: options named here are the padder's, every
    other comma-separated piece belongs to the base SPEC (default: reference)."""
    base_parts, options = [], {}
    for piece in arg.split(",") if arg else []:
        key, sep, value = piece.partition("=")
        if sep and key.strip() in SOURCE_PAD_OPTIONS:
            try:
                options[key.strip()] = int(value)
            except ValueError:
                raise ValueError(f"padsrc option {piece!r}: expected an integer") from None
        else:
            base_parts.append(piece)
    base_spec = ",".join(base_parts) or "reference"
    return SourcePadAgent(make_agent(base_spec, task, device=device), task.max_response_chars,
                          max_extra=options.get("max_extra", 3), pad_seed=options.get("pad_seed", 0),
                          name=f"padsrc:{arg}" if arg else "padsrc")


def _char_ngrams(text: str, n: int = 3) -> Counter:
    text = re.sub(r"\s+", " ", text.lower())
    return Counter(text[i:i + n] for i in range(max(1, len(text) - n + 1)))


class RetrievalAgent:
    """Nearest neighbour: answers with the reference of the most similar training example.

    Similarity is TF-IDF cosine over character 3-grams of the source text, which works for
    Japanese as well as English; summarisation looks only among examples of the same aspect.
    """

    name = "retrieval"

    def __init__(self, train: Sequence[Example] | None = None, max_df: float = 0.05,
                 max_response_chars: int | None = None):
        # Only references that are valid actions of the env can be answers (a few chat replies
        # in the training data run to thousands of characters).
        self.train = [ex for ex in (train or [])
                      if max_response_chars is None or len(ex.references[0]) <= max_response_chars]
        self.max_df = max_df
        self._build()

    def _build(self):
        self._postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self._idf: dict[str, float] = {}
        n = max(1, len(self.train))
        grams = [_char_ngrams(ex.source or ex.prompt) for ex in self.train]
        df = Counter(g for counts in grams for g in counts)
        # Very common n-grams carry no signal and make postings long: skip them.
        self._idf = {g: math.log(n / d) for g, d in df.items() if d <= max(2, self.max_df * n)}
        for doc, counts in enumerate(grams):
            weights = {g: c * self._idf[g] for g, c in counts.items() if g in self._idf}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for g, w in weights.items():
                self._postings[g].append((doc, w / norm))

    def nearest(self, text: str, aspect: str | None = None) -> Example | None:
        weights = {g: c * self._idf[g] for g, c in _char_ngrams(text).items() if g in self._idf}
        scores: dict[int, float] = defaultdict(float)
        for g, w in weights.items():
            for doc, dw in self._postings[g]:
                scores[doc] += w * dw
        # the best match: highest score, lowest index on ties, in one pass instead of sorting
        # every candidate (the 1,517 translation queries: 8.3 -> 5.5 s CPU, same answers)
        best = min(((-score, doc) for doc, score in scores.items()
                    if aspect is None or self.train[doc].meta.get("aspect") == aspect), default=None)
        if best is not None:
            return self.train[best[1]]
        candidates = [ex for ex in self.train if aspect is None or ex.meta.get("aspect") == aspect]
        return candidates[0] if candidates else None

    def act(self, observations, infos):
        out = []
        for obs, info in zip(observations, infos):
            aspect = info.get("meta", {}).get("aspect")
            hit = self.nearest(info.get("source") or obs, aspect)
            out.append(hit.references[0] if hit else "")
        return out


class HFModelAgent:
    """Any Hugging Face causal or seq2seq model (local path or hub id), batched generation.

    Greedy by default (``temperature=0``) so evaluations are reproducible. Prompts longer than
    the model's context are cut in the middle, as the token-level env does. A causal model whose
    tokenizer has a chat template gets each prompt as a user message (``instruction`` first, when
    given), wrapped by that template. Sampling is exactly ``softmax(logits / temperature)``
    (nucleus-truncated only when ``top_p < 1``): the model's saved generation defaults never apply.
    """

    def __init__(self, path: str, max_new_tokens: int = 48, batch_size: int = 32, temperature: float = 0.0,
                 top_p: float = 1.0, device: str | None = None, seed: int = 0, max_prompt_tokens: int | None = None,
                 instruction: str = "", max_response_chars: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        from rlhf_gym.policy import load_hf_config
        from rlhf_gym.tokenizer import load_tokenizer

        self.path, self.name = str(path), f"hf:{path}"
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.temperature, self.top_p, self.seed = float(temperature), float(top_p), seed
        self.max_response_chars = max_response_chars  # generations are cut to the env's limit
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = load_hf_config(self.path)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.model = cls.from_pretrained(self.path).to(self.device).eval()
        local_tok = Path(self.path, "tokenizer.json").exists() or Path(self.path, "tokenizer_config.json").exists()
        self.tokenizer = load_tokenizer(self.path if local_tok or not Path(self.path).exists() else None)
        context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 1024
        self.max_prompt_tokens = max_prompt_tokens or (context if self.seq2seq else context - self.max_new_tokens)
        self.chat = not self.seq2seq and bool(getattr(self.tokenizer, "chat_template", None))
        self.instruction = instruction

    def _prompt_ids(self, prompt: str) -> list[int]:
        from rlhf_gym.envs.token_env import truncate_prompt_ids

        tok = self.tokenizer
        if not self.chat:
            return truncate_prompt_ids(tok(prompt)["input_ids"], self.max_prompt_tokens)
        # Cut the prompt text (never the template's tokens), then wrap it as a user message.
        wrap = lambda text: tok(tok.apply_chat_template(  # noqa: E731
            [{"role": "user", "content": f"{self.instruction}\n\n{text}" if self.instruction else text}],
            add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"]
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        budget = max(8, self.max_prompt_tokens - (len(wrap("")) + 8))
        if len(ids) > budget:
            prompt = tok.decode(truncate_prompt_ids(ids, budget)).replace("\ufffd", "")
        return wrap(prompt)

    def act(self, observations, infos=None):
        import torch

        from rlhf_gym.policy import explicit_generation_config, generate_with_config

        tok, out = self.tokenizer, []
        generator_seed = torch.Generator().manual_seed(self.seed)
        for start in range(0, len(observations), self.batch_size):
            batch = list(observations[start:start + self.batch_size])
            ids = [self._prompt_ids(p) for p in batch]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids], device=self.device)
            attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
            sample = self.temperature > 0
            if sample:
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
            gen_cfg = explicit_generation_config(
                max_new_tokens=self.max_new_tokens, do_sample=sample, temperature=self.temperature if sample else 1.0,
                top_p=self.top_p, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id,
                decoder_start_token_id=getattr(self.model.config, "decoder_start_token_id", None)
                or getattr(self.model.generation_config, "decoder_start_token_id", None))
            with torch.inference_mode():
                generated = generate_with_config(self.model, gen_cfg, input_ids=input_ids, attention_mask=attention)
            new = generated if self.seq2seq else generated[:, width:]
            out.extend(tok.decode(row, skip_special_tokens=True).strip() for row in new.tolist())
        if self.max_response_chars is not None:
            from rlhf_gym.envs.text_env import fit_action

            out = [fit_action(text, self.max_response_chars) for text in out]
        return out


# ------------------------------------------------------------------------- specs -> agents

_FACTORIES: dict[str, Callable[[str, Any], Agent]] = {}
_TAKES_DEVICE: set[str] = set()  # prefixes whose factory takes device= (bench --device)


def register_agent(prefix: str, factory: Callable[..., Agent], takes_device: bool = False) -> None:
    """Make ``--agent PREFIX:ARG`` build ``factory(ARG, task)``; with ``takes_device``,
    ``factory(ARG, task, device=DEVICE)`` when ``bench --device`` names one."""
    _FACTORIES[prefix] = factory
    (_TAKES_DEVICE.add if takes_device else _TAKES_DEVICE.discard)(prefix)


register_agent("reference", lambda arg, task: ReferenceAgent())
register_agent("lead", lambda arg, task: LeadAgent(task.kind, task.max_response_chars))
register_agent("copy", lambda arg, task: LeadAgent(task.kind, task.max_response_chars))
register_agent("echo", lambda arg, task: LeadAgent(task.kind, task.max_response_chars))
register_agent("retrieval", lambda arg, task: RetrievalAgent(task.examples("train"),
                                                             max_response_chars=task.max_response_chars))
register_agent("pad", lambda arg, task, device=None: PadAgent(make_agent(arg or "reference", task, device=device),
                                                              task.max_response_chars,
                                                              name=f"pad:{arg}" if arg else "pad"), takes_device=True)
register_agent("padsrc", _source_pad_agent, takes_device=True)


def _hf_agent(arg: str, task, device: str | None = None) -> HFModelAgent:
    """``hf:PATH_OR_ID[,temperature=0.7,...]``: chat models get the task's instruction."""
    from rlhf_gym.policy import CHAT_DEFAULTS, parse_agent_arg

    path, kwargs = parse_agent_arg(arg)
    if not path:
        raise ValueError("hf: needs a model, e.g. hf:path/to/folder or hf:HUB_ID")
    if device is not None:  # a device=... in the spec wins
        kwargs.setdefault("device", device)
    kwargs.setdefault("max_new_tokens", task.max_new_tokens)
    kwargs.setdefault("max_response_chars", task.max_response_chars)
    kwargs.setdefault("instruction", CHAT_DEFAULTS.get(task.kind, {}).get("instruction", ""))
    agent = HFModelAgent(path, **kwargs)
    if "," in arg:
        agent.name = f"hf:{arg}"
    return agent


def _builtin_policy_agent(name: str):
    """``smollm2[,temperature=0.7,seed=1,...]``: a built-in pretrained policy prompted for the
    task (greedy unless a temperature is given)."""

    def factory(arg: str, task, device: str | None = None):
        from rlhf_gym.policy import PolicyAgent, parse_agent_arg

        _, kwargs = parse_agent_arg(f"{name},{arg}" if arg else name)
        kwargs.setdefault("max_response_chars", task.max_response_chars)
        if device is not None:  # a device=... in the spec wins
            kwargs.setdefault("device", device)
        return PolicyAgent(name, env_id=task.env_id, name=f"{name},{arg}" if arg else name, **kwargs)

    return factory


register_agent("hf", _hf_agent, takes_device=True)
register_agent("smollm2", _builtin_policy_agent("smollm2"), takes_device=True)


def _load_class(target: str, attr: str):
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ValueError(f"agent file not found: {target}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not hasattr(module, attr):
        raise ValueError(f"{target} has no attribute {attr!r}")
    return getattr(module, attr)


def _takes_device(cls: type) -> bool:
    try:
        return "device" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def make_agent(spec: str, task, device: str | None = None) -> Agent:
    """Build the agent a spec string names, for ``task`` (baselines depend on the task kind).
    ``device`` (``bench --device``, resolved): model agents that take a device are built on it
    (a ``device=`` in the spec wins); ``None`` keeps each agent's own default."""
    prefix, _, arg = spec.partition(":")
    if "," in prefix and not arg:  # NAME,key=value,...: options for an agent that takes no argument
        prefix, _, arg = prefix.partition(",")
    if prefix not in _FACTORIES:
        try:  # training-based baselines (sft:, ppo:, rloo:, bon:) register themselves on import
            importlib.import_module("rlhf_gym.baselines_cli")
        except ImportError:
            pass
    if prefix in _FACTORIES:
        on_device = device is not None and prefix in _TAKES_DEVICE
        agent = _FACTORIES[prefix](arg, task, device=device) if on_device else _FACTORIES[prefix](arg, task)
    elif arg and (prefix.endswith(".py") or "." in prefix or importlib.util.find_spec(prefix) is not None):
        obj = _load_class(prefix, arg)
        if isinstance(obj, type):
            agent = obj(device=device) if device is not None and _takes_device(obj) else obj()
        else:
            agent = obj
    else:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(f"unknown agent spec {spec!r}: use one of {known} (as PREFIX or PREFIX:ARG), "
                         "or module:Class / file.py:Class")
    if not callable(getattr(agent, "act", None)):
        raise ValueError(f"agent {spec!r} has no act(observations, infos) method")
    if not getattr(agent, "name", None):
        agent.name = spec
    return agent
