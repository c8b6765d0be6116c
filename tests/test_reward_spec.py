"""Reward spec strings: parsing, caching, errors, every form, describe_reward and env integration.

Expected values are computed independently with sacrebleu / rouge-score / the model itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlhf_gym.rewards.spec import FORMS, clear_cache, describe_reward, load_reward, parse_spec

PROMPTS = ["Topic: pets\nA: Do you have a dog?\nB:", "Topic: food\nA: What did you eat today?\nB:"]
RESPONSES = ["Yes, a small terrier named Max.", "Pizza with olives, it was great."]
REFS = [["Yes, I have a terrier called Max."], ["I had pizza and it was great."]]


def chrf_by_hand(response, refs):
    import sacrebleu

    return sacrebleu.sentence_chrf(response, refs).score / 100.0


def rouge_l_by_hand(response, refs):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(scorer.score(r, response)["rougeL"].fmeasure for r in refs)


def test_metric_spec_matches_sacrebleu():
    rm = load_reward("chrf")
    assert rm.name == "metric:chrf"
    got = rm(PROMPTS, RESPONSES, REFS)
    expected = [chrf_by_hand(r, ref) for r, ref in zip(RESPONSES, REFS)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert 0.2 < expected[0] < 1.0


@pytest.mark.parametrize("spec", ["0.7*chrf+0.3*rougeL", " 0.7 * chrf  +  0.3*rougeL ", "0.7*chrf + 0.3 * rougeL"])
def test_weighted_sum_is_whitespace_tolerant(spec):
    rm = load_reward(spec)
    expected = [0.7 * chrf_by_hand(r, ref) + 0.3 * rouge_l_by_hand(r, ref) for r, ref in zip(RESPONSES, REFS)]
    np.testing.assert_allclose(rm(PROMPTS, RESPONSES, REFS), expected, rtol=0, atol=1e-12)


def test_weights_signs_and_single_weighted_terms():
    chrf = np.array([chrf_by_hand(r, ref) for r, ref in zip(RESPONSES, REFS)])
    rouge = np.array([rouge_l_by_hand(r, ref) for r, ref in zip(RESPONSES, REFS)])
    np.testing.assert_allclose(load_reward("2*chrf")(PROMPTS, RESPONSES, REFS), 2 * chrf, atol=1e-12)
    np.testing.assert_allclose(load_reward("-1*chrf")(PROMPTS, RESPONSES, REFS), -chrf, atol=1e-12)
    np.testing.assert_allclose(load_reward("chrf - 0.5*rougeL")(PROMPTS, RESPONSES, REFS), chrf - 0.5 * rouge,
                               atol=1e-12)
    np.testing.assert_allclose(load_reward("chrf + -0.5*rougeL")(PROMPTS, RESPONSES, REFS), chrf - 0.5 * rouge,
                               atol=1e-12)
    np.testing.assert_allclose(load_reward(".5*rougeL+1e-1*chrf")(PROMPTS, RESPONSES, REFS), 0.5 * rouge + 0.1 * chrf,
                               atol=1e-12)
    assert parse_spec("0.7*builtin+0.3*chrf") == [(0.7, "builtin"), (0.3, "chrf")]
    assert parse_spec("builtin") == [(None, "builtin")]
    assert parse_spec("-chrf") == [(-1.0, "chrf")]


def test_results_are_cached_and_shared():
    assert load_reward("chrf") is load_reward("chrf")
    combo = load_reward("0.5*chrf+0.5*rougeL")
    assert combo is load_reward("0.5*chrf+0.5*rougeL")
    assert combo.parts[0][1] is load_reward("chrf")  # terms are shared between specs
    clear_cache()
    assert load_reward("chrf") is not combo.parts[0][1]


def test_builtin_and_judge_come_from_the_task(tiny_task):
    # tiny_task: reward chrF, judge ROUGE-L, each factory returning a new object per call
    reward = load_reward("builtin", tiny_task)
    assert reward.name == "metric:chrf"
    assert reward is load_reward("builtin", tiny_task)
    assert load_reward("builtin", tiny_task.env_id) is reward  # an env id names the same task
    assert load_reward("judge", tiny_task).name == "metric:rougeL"
    assert load_reward("refjudge", tiny_task).name == "metric:rougeL"  # no reference judge: the judge
    rm = load_reward("builtin + 0.5*judge", tiny_task)
    expected = [chrf_by_hand(r, ref) + 0.5 * rouge_l_by_hand(r, ref) for r, ref in zip(RESPONSES, REFS)]
    np.testing.assert_allclose(rm(PROMPTS, RESPONSES, REFS), expected, atol=1e-12)
    with pytest.raises(ValueError, match="needs a task"):
        load_reward("builtin")


@pytest.mark.parametrize("spec", ["nonsense", "0.5*chrf+", "chrf++bleu", "", "0.5*", "hf:"])
def test_bad_spec_names_itself_and_every_form(spec):
    with pytest.raises(ValueError) as err:
        load_reward(spec)
    message = str(err.value)
    assert repr(spec) in message
    for form in ("builtin", "judge", "refjudge", "gold", "chrf", "bleu", "rougeL", "rouge1", "rouge2", ".safetensors",
                 "hf:", ".py:FUNCTION", "0.7*builtin+0.3*chrf"):
        assert form in message, form
    assert len(FORMS) == 9


def test_missing_files_are_named(tmp_path):
    head = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match=str(head)):
        load_reward(str(head))
    script = tmp_path / "nope.py"
    with pytest.raises(FileNotFoundError, match=str(script)):
        load_reward(f"{script}:score")


def test_python_function_spec(tmp_path):
    script = tmp_path / "my_reward.py"
    script.write_text(
        "def score(prompts, responses, references):\n"
        "    return [len(r.split()) - 0.5 * len(refs) for r, refs in zip(responses, references)]\n"
        "def per_item(prompt, response):\n    return 1.0\n"
        "def too_few(responses):\n    return [0.0] * len(responses)\n")
    rm = load_reward(f"{script}:score")
    assert rm.name == "py:my_reward.py:score"
    np.testing.assert_array_equal(rm(PROMPTS, RESPONSES, REFS), [6 - 0.5, 6 - 0.5])
    assert rm is load_reward(f"{script}:score")
    mixed = load_reward(f"0.5*{script}:score + chrf")
    expected = [0.5 * 5.5 + chrf_by_hand(r, ref) for r, ref in zip(RESPONSES, REFS)]
    np.testing.assert_allclose(mixed(PROMPTS, RESPONSES, REFS), expected, atol=1e-12)
    info = describe_reward(rm)
    assert info["name"] == rm.name and len(info["sha256"]) == 64 and info["encoder"] is None
    for bad, problem in (("per_item", "must accept"), ("too_few", "must accept"), ("missing", "no function 'missing'")):
        with pytest.raises(ValueError, match=problem):
            load_reward(f"{script}:{bad}")


def test_head_file_spec_and_description():
    from rlhf_gym.rewards.embedding import EmbeddingRewardModel, builtin_head_path

    path = builtin_head_path("dialogue", "reward")
    rm = load_reward(str(path))
    assert isinstance(rm, EmbeddingRewardModel)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    info = describe_reward(rm)
    assert info["sha256"] == sidecar["sha256"]
    assert "all-MiniLM-L6-v2" in info["encoder"]
    # the same head through the spec scores exactly like the model loaded directly
    direct = EmbeddingRewardModel.from_file(path)
    np.testing.assert_array_equal(rm(PROMPTS, RESPONSES, [[], []]), direct(PROMPTS, RESPONSES, [[], []]))


def test_hf_spec_loads_a_local_classifier(tmp_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rlhf_gym.rewards.embedding import get_encoder

    tokenizer = AutoTokenizer.from_pretrained(str(get_encoder().model_dir))
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                                     num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64, num_labels=1)).eval()
    out = tmp_path / "clf"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    rm = load_reward(f"hf:{out}")
    assert rm.name == f"hf:{out}"
    with torch.no_grad():
        expected = [float(model(**tokenizer(p, r, return_tensors="pt")).logits[0, 0]) for p, r in zip(PROMPTS, RESPONSES)]
    np.testing.assert_allclose(rm(PROMPTS, RESPONSES, REFS), expected, atol=1e-5)
    assert len(describe_reward(rm)["sha256"]) == 64


def test_describe_weighted_and_callables():
    info = describe_reward(load_reward("0.7*chrf+0.3*rougeL"))
    assert info["name"] == "0.7*metric:chrf + 0.3*metric:rougeL"
    assert [c["weight"] for c in info["components"]] == [0.7, 0.3]
    assert len(info["sha256"]) == 64 and info["encoder"] is None
    assert info["sha256"] != describe_reward(load_reward("0.3*chrf+0.7*rougeL"))["sha256"]

    def my_reward(prompt, response):
        return float(len(response))

    rm = load_reward(my_reward)
    assert rm.name == "my_reward"
    assert rm(PROMPTS, RESPONSES).tolist() == [float(len(r)) for r in RESPONSES]
    assert describe_reward(rm) == {"name": "my_reward", "sha256": None, "encoder": None}


def test_env_takes_a_spec_string():
    import gymnasium as gym

    import rlhf_gym  # noqa: F401  (registers the envs)

    env = gym.make("rlhf_gym/Dialogue-v0", reward_model="0.5*builtin+0.5*chrf")
    obs, info = env.reset(seed=0)
    response = "That sounds fun, tell me more about it!"
    _, reward, terminated, _, step_info = env.step(response)
    assert terminated
    task = env.unwrapped.task
    builtin = task.reward_model()(([obs]), [response], [info["references"]])[0]
    expected = 0.5 * builtin + 0.5 * chrf_by_hand(response, info["references"])
    assert reward == pytest.approx(expected, abs=1e-9)
    assert step_info["score"] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="bad reward spec"):
        gym.make("rlhf_gym/Dialogue-v0", reward_model="0.5*nonsense")


# ------------------------------------------------------------- preference pairs and train-rm
# (here because this helper owns the reward tooling files; they test rewards/preferences.py and
# rewards/train.py)


def test_builtin_pairs_include_balanced_degenerate_negatives():
    from collections import Counter

    from rlhf_gym.rewards.preferences import DEGENERATE_KINDS, builtin_pairs, max_response_chars

    pairs = builtin_pairs("summarization", "validation", seed=0)
    kinds = Counter(p["negative"] for p in pairs)
    assert set(DEGENERATE_KINDS) <= set(kinds)
    share = sum(kinds[k] for k in DEGENERATE_KINDS) / len(pairs)
    assert 0.08 <= share <= 0.25, share  # a minority, so held-out accuracy is not inflated
    # every kind gets about the same number of pairs
    counts = [kinds[k] for k in DEGENERATE_KINDS]
    assert max(counts) <= 1.6 * min(counts), counts
    limit = max_response_chars("summarization")
    assert limit == 400
    for p in pairs:
        if p["negative"] in DEGENERATE_KINDS:
            assert len(p["rejected"]) <= limit
        if p["negative"] == "repeat_word":
            words = p["rejected"].split()
            assert len(set(words)) == 1 and len(p["rejected"]) > limit - len(words[0]) - 2
        if p["negative"] == "filler":
            assert p["rejected"].startswith(p["chosen"]) or len(set(p["rejected"].split())) <= 3
    # deterministic
    assert builtin_pairs("summarization", "validation", seed=0) == pairs


def test_policy_sample_pairs_match_a_hand_labelling():
    from itertools import combinations

    from rlhf_gym.rewards.preferences import policy_sample_pairs

    samples = [
        {"id": "a", "prompt": "Say hi.", "references": ["Hello there, my friend."],
         "responses": ["Hello there, friend.", "Goodbye.", "Hello there, friend.  ", "Hello my friend.", "xq"]},
        {"id": "b", "prompt": "Name a fruit.", "references": ["An apple."], "responses": ["An apple.", "A pear."]},
    ]
    pairs = policy_sample_pairs(samples, load_reward("chrf"), min_margin=0.05)
    expected = []
    for rec in samples:
        distinct = list(dict.fromkeys(r.strip() for r in rec["responses"]))
        score = {r: chrf_by_hand(r, rec["references"]) for r in distinct}
        for x, y in combinations(distinct, 2):
            if abs(score[x] - score[y]) >= 0.05:
                expected.append((rec["id"],) + ((x, y) if score[x] > score[y] else (y, x)))
    assert sorted((p["id"], p["chosen"], p["rejected"]) for p in pairs) == sorted(expected)
    assert len(expected) >= 5
    for p in pairs:
        assert p["margin"] >= 0.05 and p["chosen_score"] > p["rejected_score"]
        assert p["references"] and p["judge"] == "metric:chrf"
    everything = policy_sample_pairs(samples, load_reward("chrf"), min_margin=0.0)
    assert len(everything) >= len(pairs)
    with pytest.raises(ValueError, match="responses"):
        policy_sample_pairs([{"id": "x", "prompt": "p"}], load_reward("chrf"))


def test_wilson_interval():
    from rlhf_gym.rewards.train import wilson_interval

    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0


def _pref_rows(topics, offset, refs=False):
    rows = []
    for i, t in enumerate(topics):
        row = {"prompt": f"Tell me something about {t}.", "chosen": f"Here is a fact about {t}.",
               "rejected": f"I refuse to talk about {topics[(i + offset) % len(topics)]}."}
        if refs:
            row["references"] = [f"A fact about {t}."]
        rows.append(row)
    return rows


TOPICS = ["dogs", "the sea", "jazz", "bread", "chess", "rain", "trains", "coffee", "mountains", "football", "gardens",
          "winter", "the moon", "bicycles", "cheese", "violins", "rivers", "cats", "tea", "snow", "owls", "tennis",
          "deserts", "pianos", "lakes", "apples", "storms", "kites", "castles", "bees"]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_rm_several_files_and_eval_prefs(tmp_path, capsys):
    from rlhf_gym.rewards.train import main

    a = _write(tmp_path / "a.jsonl", _pref_rows(TOPICS[:15], 3))
    b = _write(tmp_path / "b.jsonl", _pref_rows(TOPICS[15:], 5))
    held = _write(tmp_path / "held.jsonl", _pref_rows(TOPICS[5:30], 7))
    out = tmp_path / "h.safetensors"
    assert main(["train-rm", "--prefs", str(a), str(b), "--eval-prefs", str(held), "--out", str(out),
                 "--epochs", "5", "--quiet"]) == 0
    text = capsys.readouterr()
    assert "n=25" in text.out and "95% Wilson CI" in text.out
    assert "WARNING" not in text.err
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["pairs"]["fit"] + sidecar["pairs"]["dev"] == 30
    assert sidecar["pairs"]["eval"] == 25
    group = sidecar["eval_groups"][f"--eval-prefs {held}"]
    assert group["n"] == 25 and 0 <= group["ci95"][0] <= group["accuracy"] <= group["ci95"][1] <= 1
    assert sidecar["eval_accuracy"] == pytest.approx(group["accuracy"])


def test_train_rm_warns_or_fails_on_too_few_held_out_pairs(tmp_path, capsys):
    from rlhf_gym.rewards.train import main

    prefs = _write(tmp_path / "p.jsonl", _pref_rows(TOPICS, 7))
    out = tmp_path / "h.safetensors"
    assert main(["train-rm", "--prefs", str(prefs), "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: only" in err and "held-out pairs" in err
    with pytest.raises(ValueError, match="no held-out pairs"):
        main(["train-rm", "--prefs", str(prefs), "--out", str(out), "--max-eval-pairs", "0", "--quiet"])
    with pytest.raises(ValueError, match="--with-builtin"):
        main(["train-rm", "--prefs", str(prefs), "--with-builtin", "--out", str(out), "--quiet"])
    with pytest.raises(ValueError, match="--with-builtin"):
        main(["train-rm", "--prefs", str(prefs), "--task", "translation", "--out", str(out), "--quiet"])


def test_train_rm_with_builtin_adds_the_task_pairs(tmp_path, capsys):
    from rlhf_gym.rewards.train import main

    prefs = _write(tmp_path / "p.jsonl", _pref_rows(TOPICS, 7, refs=True))
    out = tmp_path / "h.safetensors"
    assert main(["train-rm", "--task", "translation", "--with-builtin", "--prefs", str(prefs), "--out", str(out),
                 "--max-pairs", "40", "--max-eval-pairs", "24", "--epochs", "3", "--quiet"]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["kind"] == "reference"
    file_train = len(TOPICS) - sidecar["eval_groups"].get("--prefs 10% hold-out", {"n": 0})["n"]
    assert sidecar["pairs"]["fit"] + sidecar["pairs"]["dev"] == 40 + file_train
    assert sidecar["eval_groups"]["built-in translation validation"]["n"] == 24
    assert "built-in translation validation" in capsys.readouterr().out
