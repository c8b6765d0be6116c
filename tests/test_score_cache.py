"""The per-example score cache, the bounded MiniLM embedding cache and the shared-charset text
space (what keeps a long-running leaderboard server fast and its memory bounded)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rlhf_gym.score_cache import MemoryScoreCache, cached_scores, entry_key, model_namespace


def test_memory_cache_is_a_bounded_lru():
    cache = MemoryScoreCache(max_items=2)
    cache.put_many({"a": 1, "b": 2})
    assert cache.get_many(["a"]) == {"a": 1}  # "a" is now the most recently used
    cache.put_many({"c": 3})
    assert len(cache) == 2 and cache.get_many(["a", "b", "c"]) == {"a": 1, "c": 3}
    cache.put_many({"a": 99})  # a key keeps its first value
    assert cache.get_many(["a"]) == {"a": 1}
    with pytest.raises(ValueError, match="max_items"):
        MemoryScoreCache(0)


def test_cached_scores_computes_each_distinct_miss_once_and_keeps_dtypes():
    calls = []

    def scorer(texts):
        def compute(positions):
            calls.append(list(positions))
            lengths = np.array([len(texts[p]) for p in positions], dtype=np.float32)
            return {"len": lengths, "double": 2.0 * lengths.astype(np.float64)}

        return compute

    ids, texts = ["x", "y", "x", "z"], ["aa", "bbb", "aa", "c"]  # positions 0 and 2 are one (id, text)
    cache = MemoryScoreCache()
    first = cached_scores(cache, "ns", ids, texts, scorer(texts))
    assert calls == [[0, 1, 3]]
    assert first["len"].dtype == np.float32 and first["double"].dtype == np.float64
    assert first["len"].tolist() == [2, 3, 2, 1] and first["double"].tolist() == [4, 6, 4, 2]
    new_texts = ["c", "bbb", "dddd"]
    again = cached_scores(cache, "ns", ["z", "y", "w"], new_texts, scorer(new_texts))
    assert calls[-1] == [2]  # only the new (w, dddd)
    assert again["len"].tolist() == [1, 3, 4] and again["len"].dtype == np.float32
    cached_scores(cache, "other model", ids, texts, scorer(texts))  # another namespace shares nothing
    assert calls[-1] == [0, 1, 3]
    cached_scores(None, "ns", ids, texts, scorer(texts))  # no cache: everything, in order
    assert calls[-1] == [0, 1, 2, 3]
    # The same text under another example id is another entry (the score may read the prompt).
    assert entry_key("ns", "x", "aa") != entry_key("ns", "y", "aa")
    assert entry_key("ns", "a|1:b", "c") != entry_key("ns", "a", "1:b|c")


def test_models_without_a_hash_are_never_cached():
    class Task:
        env_id, version = "rlhf_gym/X-v3", 3

    assert model_namespace(Task, "test", "judge", {"name": "fn", "sha256": None}) is None
    a = model_namespace(Task, "test", "judge", {"name": "j", "sha256": "ab"})
    b = model_namespace(Task, "test", "judge", {"name": "j", "sha256": "cd"})
    c = model_namespace(Task, "test", "reward", {"name": "j", "sha256": "ab"}, safety_coef=0.5)
    assert len({a, b, c}) == 3


def test_minilm_embedding_cache_is_bounded_and_exact():
    from rlhf_gym.rewards.embedding import SentenceEncoder

    enc = SentenceEncoder(cache_size=3)
    texts = ["one small text", "another text", "a third one", "and a fourth"]
    full = enc.encode(texts)  # 4 distinct texts in one call: all returned, 3 kept
    assert full.shape == (4, 384) and len(enc._cache) == 3 and enc.texts_encoded == 4
    kept = [t for t in texts if (t, 128) in enc._cache]
    (evicted,) = [t for t in texts if t not in kept]
    again = enc.encode(kept)  # cached: nothing encoded, the very same vectors
    assert enc.texts_encoded == 4
    assert np.array_equal(again, np.stack([full[texts.index(t)] for t in kept]))
    vec = enc.encode([evicted])[0]  # encoded again (alone, so its float rounding may differ a little)
    assert enc.texts_encoded == 5 and len(enc._cache) == 3 and (kept[0], 128) not in enc._cache
    np.testing.assert_allclose(vec, full[texts.index(evicted)], atol=1e-5)


def test_text_space_copies_share_the_charset_but_not_the_rng():
    from gymnasium import spaces

    from rlhf_gym.envs.text_env import TEXT_CHARSET, text_space

    space = text_space(40)
    plain = spaces.Text(max_length=40, min_length=0, charset=TEXT_CHARSET)
    assert space == plain and space.character_set == plain.character_set
    assert space.character_list == plain.character_list and space.character_index("語") == plain.character_index("語")
    assert space.contains("Hello, 世界! ça va?") and not space.contains("x" * 41)
    space.seed(3)
    clone = copy.deepcopy(space)
    assert clone._char_index is space._char_index  # shared, not copied
    assert clone.sample() == space.sample()  # the RNG state was copied ...
    clone.sample()
    assert clone.np_random is not space.np_random  # ... into a generator of its own
    with pytest.raises(ValueError):
        text_space(5, min_length=6)
