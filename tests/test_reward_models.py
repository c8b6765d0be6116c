"""Embedding reward models: encoder pooling, Bradley-Terry training, shipped heads, preference files,
the Hugging Face classifier wrapper and determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rlhf_gym.rewards import embedding as E
from rlhf_gym.rewards.preferences import builtin_pairs, read_preference_file, split_hh
from rlhf_gym.rewards.train import bt_loss, pairwise_accuracy, train_reward_model

THRESHOLDS = {"translation": 0.80, "summarization": 0.80, "dialogue": 0.65}


@pytest.fixture(scope="module")
def encoder():
    return E.get_encoder()


def test_bt_loss_matches_hand_computation():
    # -log sigmoid(1) = log(1 + e^-1); -log sigmoid(-1) = log(1 + e)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    got = float(bt_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])))
    assert got == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.813262, abs=1e-6)


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy(np.array([1.0, 2.0, 3.0, 0.0]), np.array([0.0, 2.0, 1.0, 1.0])) == 0.5


def test_embedding_is_mean_pooled_and_normalised(encoder):
    sentence = "The quick brown fox jumps over the lazy dog."
    tok = encoder.tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        states = encoder.model(**tok).last_hidden_state[0]  # one sentence: no padding to mask
    by_hand = states.mean(0)
    by_hand = (by_hand / by_hand.norm()).numpy()
    # batched with a much longer text so the sentence is padded: the mask must hide the padding
    ours = encoder.encode([sentence, "word " * 60], E.TEXT_MAX_LEN)[0]
    assert ours.shape == (E.EMBED_DIM,)
    assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(ours, by_hand, atol=2e-5)


def test_bt_training_learns_from_a_handful_of_pairs(encoder, tmp_path):
    train = builtin_pairs("translation", "train", seed=0)[:60]
    held = builtin_pairs("translation", "validation", seed=0)[:48]
    metrics = train_reward_model(train, held, "reference", tmp_path / "h.safetensors", seed=0,
                                 epochs=30, encoder=encoder, progress=False)
    assert metrics["final_train_loss"] < metrics["initial_train_loss"]
    assert metrics["eval_accuracy"] > 0.75, metrics
    sidecar = json.loads((tmp_path / "h.json").read_text())
    assert sidecar["eval_accuracy"] == metrics["eval_accuracy"]
    rm = E.EmbeddingRewardModel.from_file(tmp_path / "h.safetensors", encoder=encoder)
    assert rm.sha256 == sidecar["sha256"]


def test_training_is_deterministic_for_a_seed(encoder):
    train = builtin_pairs("translation", "train", seed=0)[:40]
    a = train_reward_model(train, [], "reference", None, seed=3, epochs=5, encoder=encoder, progress=False)
    b = train_reward_model(train, [], "reference", None, seed=3, epochs=5, encoder=encoder, progress=False)
    for (k, va), vb in zip(a["head"].state_dict().items(), b["head"].state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("task", ["translation", "summarization", "dialogue"])
def test_shipped_heads_are_informative(task, encoder):
    hashes = set()
    for role in ("reward", "judge"):
        path = E.builtin_head_path(task, role)
        assert path.stat().st_size < 2_000_000
        sidecar = json.loads(path.with_suffix(".json").read_text())
        model = E.load_builtin_reward(task, role)
        assert model.sha256 == sidecar["sha256"]
        hashes.add(model.sha256)
        score = E.informativeness(task, role, split="test", limit=100, model=model)
        assert score >= THRESHOLDS[task], (task, role, score)
    assert len(hashes) == 2, "the judge must be a different model from the reward"


# Reward hacking: the echo / lead-1 baseline and short fragments must lose to the real human text.
# On this 100-example subset the shipped heads measure: reference beats lead 0.66/0.65
# (summarisation reward/judge) and 0.65/0.69 (dialogue); beats its 2-word truncation 1.00/0.99 and
# 0.89/0.82. The heads trained before the reward-hacking negatives scored 0.23-0.42 on "beats lead"
# and 0.66-0.70 on dialogue truncation (full test split), so these thresholds separate the two.
ADVERSARIAL = {"summarization": {"lead": 0.58, "truncation": 0.95},
               "dialogue": {"lead": 0.58, "truncation": 0.75}}


@pytest.mark.parametrize("task", ["summarization", "dialogue"])
def test_shipped_heads_prefer_the_reference_over_echo_lead_and_truncation(task):
    from rlhf_gym.agents import LeadAgent
    from rlhf_gym.data import load_source
    from rlhf_gym.rewards.embedding import TASK_PACK

    examples = load_source(TASK_PACK[task], "test")[:100]
    prompts = [ex.prompt for ex in examples]
    refs = [ex.references[0] for ex in examples]
    lead = LeadAgent(task).act(prompts, [{"source": ex.source} for ex in examples])
    assert sum(l != r for l, r in zip(lead, refs)) >= 95  # the baseline is not the reference itself
    long_enough = [i for i, r in enumerate(refs) if len(r.split()) > 2]
    assert len(long_enough) >= 80
    truncated = [" ".join(refs[i].split()[:2]) for i in long_enough]
    no_refs = [[]] * len(examples)
    for role in ("reward", "judge"):
        model = E.load_builtin_reward(task, role)
        s_ref = model(prompts, refs, no_refs)
        s_lead = model(prompts, lead, no_refs)
        s_trunc = model([prompts[i] for i in long_enough], truncated, [[]] * len(long_enough))
        beats_lead = float(np.mean(s_ref > s_lead))
        beats_trunc = float(np.mean(s_ref[long_enough] > s_trunc))
        assert beats_lead >= ADVERSARIAL[task]["lead"], (task, role, beats_lead)
        assert beats_trunc >= ADVERSARIAL[task]["truncation"], (task, role, beats_trunc)


def test_scores_are_deterministic_and_batch_independent():
    rm = E.load_builtin_reward("dialogue", "reward")
    prompts = ["Topic: pets\nA: Do you have a dog?\nB:", "Topic: food\nA: What did you eat today?\nB:"]
    responses = ["Yes, a small terrier named Max.", "Pizza, and it was great."]
    first = rm(prompts, responses, [[], []])
    second = rm(prompts, responses, [[], []])
    assert first.dtype == np.float64
    assert first.tolist() == second.tolist()
    assert rm(prompts[1:], responses[1:], [[]]).tolist() == first[1:].tolist()


def test_reference_head_takes_the_best_reference():
    rm = E.load_builtin_reward("translation", "reward")
    hyp = "In the beginning God created the heavens and the earth."
    one = rm(["x"], [hyp], [["And God said, Let there be light."]])
    two = rm(["x"], [hyp], [["And God said, Let there be light.", hyp]])
    exact = rm(["x"], [hyp], [[hyp]])
    assert two[0] == exact[0] > one[0]
    with pytest.raises(ValueError):
        rm(["x"], [hyp], None)


def test_unknown_task_or_role():
    with pytest.raises(ValueError):
        E.load_builtin_reward("poetry")
    with pytest.raises(ValueError):
        E.load_builtin_reward("dialogue", "critic")


# ------------------------------------------------------------------------ preference files


def test_read_plain_preference_file(tmp_path):
    path = tmp_path / "prefs.jsonl"
    rows = [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away."},
            {"prompt": "Translate", "chosen": "a", "rejected": "b", "references": ["a"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = read_preference_file(path)
    assert pairs == [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away.", "references": []},
                     {"prompt": "Translate", "chosen": "a", "rejected": "b", "references": ["a"]}]


def test_read_hh_rlhf_style(tmp_path):
    prefix = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant:"
    record = {"chosen": prefix + " 6.", "rejected": prefix + " 7, probably."}
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [pair] = read_preference_file(path)
    assert pair["prompt"] == prefix
    assert (pair["chosen"], pair["rejected"]) == ("6.", "7, probably.")
    # replies that start alike must not pull the prompt boundary into the replies
    p, c, r = split_hh(prefix + " The answer is 6.", prefix + " The answer is 7.")
    assert (p, c, r) == (prefix, "The answer is 6.", "The answer is 7.")


@pytest.mark.parametrize("bad_line, problem", [
    ('{"prompt": "p", "chosen": "c"', "not valid JSON"),
    ('{"prompt": "p", "chosen": "c"}', "'rejected'"),
    ('["p", "c", "r"]', "expected a JSON object"),
    ('{"chosen": "plain text", "rejected": "other"}', "hh-rlhf"),
    ('{"prompt": "p", "chosen": "c", "rejected": "r", "references": [1]}', "references"),
])
def test_malformed_preference_line_names_file_and_line(tmp_path, bad_line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n" + bad_line + "\n")
    with pytest.raises(ValueError) as err:
        read_preference_file(path)
    assert f"{path} line 2:" in str(err.value)
    assert problem in str(err.value)


# --------------------------------------------------------------------- Hugging Face wrapper


def _tiny_classifier(tmp_path, family: str, encoder):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(encoder.model_dir))
    torch.manual_seed(0)
    if family == "bert":
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, num_labels=2)
        model = BertForSequenceClassification(config)
    else:
        config = GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=256,
                            num_labels=1, pad_token_id=tokenizer.pad_token_id)
        model = GPT2ForSequenceClassification(config)
    out = tmp_path / family
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, model.eval(), tokenizer


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_hf_reward_model_on_a_tiny_local_classifier(tmp_path, family, encoder):
    from rlhf_gym.rewards.hf import HFRewardModel

    path, model, tokenizer = _tiny_classifier(tmp_path, family, encoder)
    label = 1 if family == "bert" else 0
    rm = HFRewardModel(path, label_index=label, batch_size=2)
    prompts = ["Question: what is the capital of France?", "Hi", "Tell me a joke about cats please"]
    responses = ["Paris.", "Hello there, how are you doing today?", "No."]
    scores = rm(prompts, responses)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    with torch.no_grad():
        for i, (p, r) in enumerate(zip(prompts, responses)):
            enc = tokenizer(p, r, return_tensors="pt") if family == "bert" else tokenizer(p + r, return_tensors="pt")
            assert scores[i] == pytest.approx(float(model(**enc).logits[0, label]), abs=1e-5)
    assert len(set(scores.tolist())) == 3
    with pytest.raises(ValueError):
        HFRewardModel(path, label_index=5)


def test_train_rm_command_on_a_preference_file(tmp_path, capsys, encoder):
    from rlhf_gym.rewards.train import main

    topics = ["dogs", "the sea", "jazz", "bread", "chess", "rain", "trains", "coffee", "mountains", "football",
              "gardens", "winter", "the moon", "bicycles", "cheese", "violins", "rivers", "cats", "tea", "snow"]
    rows = [{"prompt": f"Tell me something about {t}.", "chosen": f"Here is a fact about {t}.",
             "rejected": f"I refuse to talk about {topics[(i + 7) % len(topics)]}."} for i, t in enumerate(topics)]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "own.safetensors"
    assert main(["train-rm", "--prefs", str(prefs), "--out", str(out), "--epochs", "5", "--quiet"]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["pairs"]["eval"] + sidecar["pairs"]["fit"] + sidecar["pairs"]["dev"] == len(rows)
    assert sidecar["pairs"]["eval"] > 0
    assert "held-out pairwise accuracy" in capsys.readouterr().out
