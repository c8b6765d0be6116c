"""Submission validation and metric comparison (no scorer needed)."""

from __future__ import annotations

import copy

import pytest

from rlhf_gym.leaderboard.validate import (
    SubmissionError,
    build_submission,
    check_env_ids,
    compare_metrics,
    content_hash,
    is_verified,
    validate_structure,
)

ENV = "rlhf_gym/Translation-v0"


def doc() -> dict:
    gens = [{"id": "a", "prediction": "x"}, {"id": "b", "prediction": "y"}]
    results = {"schema_version": 1, "agent": {"name": "lead", "spec": "lead"},
               "envs": {ENV: {"env_id": ENV, "split": "test", "metrics": {"bleu": 1.0}, "generations": gens}}}
    return build_submission(results, url="https://example.org", seeds=[0, 1])


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["meta"].pop("name"), "meta.name"),
    (lambda d: d["meta"].update(url="javascript:alert(1)"), "meta.url"),
    (lambda d: d["meta"].update(seeds=["0"]), "meta.seeds"),
    (lambda d: d["meta"].update(colour="red"), "meta.colour"),
    (lambda d: d.update(extra=1), "$.extra"),
    (lambda d: d["results"].update(schema_version=2), "results.schema_version"),
    (lambda d: d["results"].update(envs={}), "results.envs"),
    (lambda d: d["results"]["envs"][ENV].update(env_id="other"), f"results.envs[{ENV!r}].env_id"),
    (lambda d: d["results"]["envs"][ENV].update(split="train"), f"results.envs[{ENV!r}].split"),
    (lambda d: d["results"]["envs"][ENV].pop("metrics"), f"results.envs[{ENV!r}].metrics"),
    (lambda d: d["results"]["envs"][ENV]["generations"][1].update(id="a"),
     f"results.envs[{ENV!r}].generations[1].id"),
    (lambda d: d["results"]["envs"][ENV]["generations"][0].update(prediction=3),
     f"results.envs[{ENV!r}].generations[0].prediction"),
])
def test_structure_errors_name_the_field(mutate, field):
    d = doc()
    validate_structure(d)  # the unmodified document is valid
    mutate(d)
    with pytest.raises(SubmissionError) as err:
        validate_structure(d)
    assert err.value.field == field


def test_duplicate_id_message_names_the_id():
    d = doc()
    d["results"]["envs"][ENV]["generations"][1]["id"] = "a"
    with pytest.raises(SubmissionError, match="duplicate example id 'a'"):
        validate_structure(d)


def test_unknown_env_and_unknown_version_are_told_apart():
    d = doc()
    check_env_ids(d, [ENV])
    with pytest.raises(SubmissionError, match="unknown version of rlhf_gym/Translation; this server scores "
                                              "rlhf_gym/Translation-v1"):
        check_env_ids(d, ["rlhf_gym/Translation-v1"])
    with pytest.raises(SubmissionError, match="unknown env id; this server knows rlhf_gym/Dialogue-v0"):
        check_env_ids(d, ["rlhf_gym/Dialogue-v0"])


def test_content_hash_ignores_key_order_but_not_content():
    d = doc()
    reordered = {k: d[k] for k in reversed(list(d))}
    assert content_hash(d) == content_hash(reordered)
    changed = copy.deepcopy(d)
    changed["meta"]["description"] = "different"
    assert content_hash(changed) != content_hash(d)


def test_compare_metrics_tolerance_and_statuses():
    rec = {"bleu": 12.345678, "sig": "nrefs:1", "wr": {"mean": 0.5, "n": 10}, "vs_agent": None, "rougeL": 3.0}
    sub = {"bleu": 12.345678 * (1 + 5e-7), "sig": "nrefs:1", "wr": {"mean": 0.5, "n": 10}, "vs_agent": None,
           "rougeL": 3.0}
    rows = compare_metrics(sub, rec)
    assert is_verified(rows)
    assert compare_metrics({**sub, "bleu": 12.345678 * (1 + 5e-6)}, rec)["bleu"]["status"] == "mismatch"
    assert compare_metrics({**sub, "sig": "nrefs:2"}, rec)["sig"]["status"] == "mismatch"
    missing = compare_metrics({k: v for k, v in sub.items() if k != "rougeL"}, rec)
    assert missing["rougeL"]["status"] == "missing" and not is_verified(missing)
    claimed = compare_metrics({**sub, "vs_agent": {"mean": 0.9}}, rec)
    assert claimed["vs_agent.mean"]["status"] == "unverifiable" and not is_verified(claimed)


def test_float_noise_of_model_scores_matches_but_a_real_change_does_not():
    # Values measured in the burst benchmark: one reward mean recomputed in another process.
    noisy = compare_metrics({"reward_mean": -0.340273192694204}, {"reward_mean": -0.34027416979464364})
    assert noisy["reward_mean"]["status"] == "match"
    changed = compare_metrics({"reward_mean": -0.3402}, {"reward_mean": -0.34027416979464364})
    assert changed["reward_mean"]["status"] == "mismatch"
    assert compare_metrics({"bleu": 12.5 + 1e-3}, {"bleu": 12.5})["bleu"]["status"] == "mismatch"
