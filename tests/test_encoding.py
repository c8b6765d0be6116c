"""The encoders' shared machinery: token-budget batching, the persistent embedding cache (exact
round trip, first writer wins, bounded, two processes, a corrupt file), and the device plumbing
(encoders follow the policy's device; checked on CPU, the only device CI has)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from rlhf_gym.rewards import encoding as enc

# ------------------------------------------------------------------------------ batching


def test_length_batches_sort_cover_and_respect_both_limits():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(1, 200, size=300)] + [500]
    batches = enc.length_batches(lengths, batch_size=16, max_batch_tokens=1024)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every item exactly once
    assert [lengths[i] for i in flat] == sorted(lengths)  # globally sorted by length
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 16
        assert len(b) * longest <= 1024 or len(b) == 1  # only a lone over-long item may exceed it
    assert batches[-1] == [len(lengths) - 1]  # the 500-token text runs alone
    with pytest.raises(ValueError):
        enc.length_batches([3], batch_size=0, max_batch_tokens=10)


# ---------------------------------------------------------------------------- disk cache


def _vectors(n, dim, seed):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_disk_cache_round_trip_is_exact_and_first_writer_wins(tmp_path):
    cache = enc.DiskEmbeddingCache(tmp_path)
    texts = ["one", "two", "three", "日本語のテキスト"]
    keys = [enc.text_key(t) for t in texts]
    vecs = _vectors(4, 8, 0)
    cache.put("space-a", list(zip(keys, vecs)))
    got = cache.get("space-a", keys, 8)
    assert all(np.array_equal(got[k], v) for k, v in zip(keys, vecs))  # bit for bit
    assert cache.get("space-b", keys, 8) == {}  # another model or length: another space
    assert cache.get("space-a", keys, 16) == {}  # a stored vector of another length is no hit
    cache.put("space-a", [(keys[0], _vectors(1, 8, 1)[0])])  # a second writer does not overwrite
    assert np.array_equal(cache.get("space-a", keys[:1], 8)[keys[0]], vecs[0])
    assert cache.count("space-a") == 4


def test_disk_cache_is_bounded_and_evicts_least_recently_used(tmp_path):
    dim = 256  # 1 KiB per vector
    cache = enc.DiskEmbeddingCache(tmp_path, max_bytes=200 * 1024)
    first = [(enc.text_key(f"old {i}"), v) for i, v in enumerate(_vectors(50, dim, 0))]
    cache.put("s", first)
    with sqlite3.connect(cache.path) as conn:  # make them clearly the oldest
        conn.execute("UPDATE embeddings SET used = used - 1000000000000")
    for round_ in range(6):
        cache.put("s", [(enc.text_key(f"new {round_} {i}"), v) for i, v in enumerate(_vectors(50, dim, round_ + 1))])
    assert cache.used_bytes() <= 200 * 1024
    assert cache.evicted > 0
    assert cache.get("s", [k for k, _ in first], dim) == {}  # the oldest went first
    newest = [enc.text_key(f"new 5 {i}") for i in range(50)]
    assert len(cache.get("s", newest, dim)) == 50


def _writer(folder, worker, rounds, queue):
    try:
        cache = enc.DiskEmbeddingCache(folder)
        for r in range(rounds):
            shared = [(enc.text_key(f"shared {r} {i}"), v) for i, v in enumerate(_vectors(20, 16, 1000 + r))]
            own = [(enc.text_key(f"w{worker} {r} {i}"), v) for i, v in enumerate(_vectors(20, 16, worker * 100 + r))]
            cache.put("s", shared + own)
            assert len(cache.get("s", [k for k, _ in shared], 16)) == 20
        queue.put((worker, cache.disabled))
    except BaseException as err:  # pragma: no cover - reported to the parent
        queue.put((worker, repr(err)))


def test_two_processes_write_the_same_cache_safely(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15, queue)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = dict(queue.get(timeout=5) for _ in procs)
    assert results == {1: None, 2: None}, results  # neither process hit an error
    cache = enc.DiskEmbeddingCache(tmp_path)
    assert cache.count("s") == 15 * 20 + 2 * 15 * 20  # shared rows once, each worker's own rows
    keys = [enc.text_key(f"shared 3 {i}") for i in range(20)]
    got = cache.get("s", keys, 16)
    np.testing.assert_array_equal(np.stack([got[k] for k in keys]), _vectors(20, 16, 1003))


def test_a_corrupt_cache_file_warns_once_and_scoring_goes_on(tmp_path):
    (tmp_path / enc.DISK_CACHE_FILENAME).write_bytes(b"this is not a sqlite database" * 100)
    cache = enc.DiskEmbeddingCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="turned off"):
        assert cache.get("s", [enc.text_key("x")], 4) == {}
    assert cache.disabled
    cache.put("s", [(enc.text_key("x"), np.zeros(4, np.float32))])  # silently skipped now


def test_cache_folder_and_bound_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(enc.ENV_DISK_CACHE, str(tmp_path / "emb"))
    assert enc.disk_cache_dir() == tmp_path / "emb"
    for off in ("off", "0", "false", "No"):
        monkeypatch.setenv(enc.ENV_DISK_CACHE, off)
        assert enc.disk_cache_dir() is None
    monkeypatch.setenv(enc.ENV_DISK_CACHE_MB, "12.5")
    assert enc.disk_cache_max_bytes() == int(12.5 * 2**20)
    monkeypatch.setenv(enc.ENV_DISK_CACHE_MB, "lots")
    with pytest.raises(ValueError, match="RLHF_GYM_EMBED_CACHE_MB"):
        enc.disk_cache_max_bytes()


# ------------------------------------------------------------- a real encoder with the cache


@pytest.fixture(scope="module")
def minilm():
    from rlhf_gym.rewards.embedding import get_encoder

    return get_encoder()


def _fresh_encoder(minilm, disk_cache):
    """A second encoder sharing the loaded MiniLM weights (as a new process would load them)."""
    from rlhf_gym.rewards.embedding import SentenceEncoder

    other = SentenceEncoder.__new__(SentenceEncoder)
    other.encoder_id, other.tokenizer, other.model = minilm.encoder_id, minilm.tokenizer, minilm.model
    other._setup(minilm.model_dir, "cpu", 64, 8192, 1000, disk_cache)
    return other


def test_a_second_process_reads_embeddings_from_disk_not_the_model(minilm, tmp_path):
    texts = ["A short one.", "A somewhat longer sentence about the weather today.", "word " * 40, "Hi"]
    cache = enc.DiskEmbeddingCache(tmp_path)
    first = _fresh_encoder(minilm, cache)
    a = first.encode(texts, 128, persist=True)
    first.encode(["A response, not kept on disk."], 128)
    assert (first.texts_encoded, first.texts_from_disk) == (5, 0)
    assert cache.count() == 4
    second = _fresh_encoder(minilm, cache)
    b = second.encode(texts + ["A new text."], 128, persist=True)
    assert (second.texts_encoded, second.texts_from_disk) == (1, 4)
    assert np.array_equal(a, b[:4])  # the stored vectors, bit for bit
    c = second.encode(texts[:1], 64, persist=True)  # another truncation length is another key
    assert second.texts_encoded == 2 and c.shape == (1, 384)
    second.encode(["A response, not kept on disk."], 128, persist=False)
    assert second.texts_encoded == 3 and second.texts_from_disk == 4
    off = _fresh_encoder(minilm, False)
    np.testing.assert_allclose(off.encode(texts, 128, persist=True), a, atol=1e-6)
    assert off.texts_encoded == 4


def test_a_text_stored_by_another_process_meanwhile_is_adopted(minilm, tmp_path):
    """Two processes encode the same reference at once: the one that stores second uses the
    first one's vector, so both score with the same bits."""

    class LateCache(enc.DiskEmbeddingCache):  # its first lookup happens before the other's write
        lookups = 0

        def get(self, space, keys, dim):
            self.lookups += 1
            return {} if self.lookups == 1 else super().get(space, keys, dim)

    text = "The reference both processes need."
    alone = _fresh_encoder(minilm, False).encode([text], 128)[0]
    # the other process's vector: computed in another batch, so off in its last bits
    theirs = (alone + np.float32(3e-7)).astype(np.float32)
    late = _fresh_encoder(minilm, LateCache(tmp_path))
    late.disk_cache.put(late.cache_space(128), [(enc.text_key(text), theirs)])
    ours = late.encode([text], 128, persist=True)[0]
    assert late.texts_encoded == 1  # it computed its own vector (equal to ``alone``) ...
    assert np.array_equal(ours, theirs) and not np.array_equal(ours, alone)  # ... but uses the stored one
    assert np.array_equal(late.encode([text], 128, persist=True)[0], theirs)


def test_batched_encoding_matches_one_text_at_a_time(minilm):
    import torch

    texts = ["Tiny.", "The quick brown fox jumps over the lazy dog.", "A " * 70, "Cats and dogs, mostly."]
    ours = _fresh_encoder(minilm, False).encode(texts, 128)
    for text, vec in zip(texts, ours):
        tokens = minilm.tokenizer(text, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            state = minilm.model(**tokens).last_hidden_state[0].mean(0)
        np.testing.assert_allclose(vec, (state / state.norm()).numpy(), atol=2e-6)


# -------------------------------------------------------------------------------- devices


def test_device_names_are_checked():
    import torch

    assert enc.resolve_device(None) == "cpu"
    assert enc.resolve_device(torch.device("cpu")) == "cpu"
    assert enc.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown encoder device"):
        enc.resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            enc.resolve_device("cuda:0")


def test_place_on_device_reaches_every_encoder_behind_an_env_reward(minilm):
    """Device plumbing, on the one device CI has: the walk reaches the encoder inside a weighted
    sum inside an env reward, and a moved encoder's weights really sit on the device asked for
    (``meta``, a real torch device with no storage, stands in for a GPU's placement check)."""
    from rlhf_gym.rewards.base import MetricReward, WeightedReward
    from rlhf_gym.rewards.embedding import EmbeddingRewardModel, builtin_head_path
    from rlhf_gym.rewards.penalties import EnvReward

    rm = EmbeddingRewardModel.from_file(builtin_head_path("dialogue"), encoder=_fresh_encoder(minilm, False))
    env_reward = EnvReward(WeightedReward([(1.0, rm), (0.5, MetricReward("chrf"))]))
    assert enc.place_on_device(env_reward, "cpu") is env_reward
    assert rm.encoder.device == "cpu"
    score = env_reward(["Topic: pets\nA: Do you have a dog?\nB:"], ["Yes, a terrier."], [["Yes, a small dog."]])[0]
    assert np.isfinite(score).all()

    import copy

    from rlhf_gym.rewards.embedding import SentenceEncoder

    moved = SentenceEncoder.__new__(SentenceEncoder)
    moved.encoder_id, moved.tokenizer = minilm.encoder_id, minilm.tokenizer
    moved.model = copy.deepcopy(minilm.model)
    moved._setup(minilm.model_dir, "cpu", 64, 8192, 10, False)
    rm_moved = EmbeddingRewardModel.from_file(builtin_head_path("dialogue"), encoder=moved)
    enc.place_on_device(EnvReward(rm_moved), "meta")
    assert moved.device == "meta"
    assert {p.device.type for p in moved.model.parameters()} == {"meta"}
    assert {p.device.type for p in minilm.model.parameters()} == {"cpu"}  # the shared one untouched


def test_the_trainer_moves_the_env_reward_encoders_to_its_device(minilm, tmp_path):
    """``train`` hands its device to the env's reward encoders (a GPU run gets GPU encoders)."""
    from test_ppo import cfg, make_policy

    from rlhf_gym.ppo.trainer import train
    from rlhf_gym.rewards.embedding import EmbeddingRewardModel, SentenceEncoder, builtin_head_path

    asked: list[str] = []

    class RecordingEncoder(SentenceEncoder):  # the real MiniLM; only remembers where it was sent
        def to(self, device):
            asked.append(enc.resolve_device(device))
            return super().to(device)

    encoder = RecordingEncoder.__new__(RecordingEncoder)
    encoder.encoder_id, encoder.tokenizer, encoder.model = minilm.encoder_id, minilm.tokenizer, minilm.model
    encoder._setup(minilm.model_dir, "cpu", 64, 8192, 1000, False)
    rm = EmbeddingRewardModel.from_file(builtin_head_path("translation"), encoder=encoder)
    policy = make_policy(tmp_path / "policy")
    history = train(cfg(policy, tmp_path / "run", iterations=1, device="cpu"), reward_model=rm)
    assert asked == ["cpu"]
    assert encoder.texts_encoded > 0 and np.isfinite(history[-1]["reward_mean"])
