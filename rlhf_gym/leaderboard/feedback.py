"""Human pairwise feedback: queueing pairs from two results files, serving them to
annotators in a per-annotator random order, exporting preferences and summarising them."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from rlhf_gym.metrics import preference_interval

from .db import Database, utcnow

LABELS = ("a", "b", "tie", "both_bad")
# Score of system A for one label: ties and "both bad" carry no preference.
SCORE_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def _system_name(results: dict, path: Path) -> str:
    agent = results.get("agent") or {}
    return str(agent.get("name") or agent.get("spec") or path.stem)


def _load(path: str | Path) -> dict:
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if "results" in doc and "submission_version" in doc:  # a submission file works too
        doc = doc["results"]
    if not isinstance(doc.get("envs"), dict):
        raise ValueError(f"{path}: not a results file (no 'envs' object)")
    return doc


def queue_pairs(db: Database, path_a: str | Path, path_b: str | Path, *, actor: str = "cli") -> dict:
    """Insert one pair per (env, example id) present in both files. Re-queueing the same
    files is a no-op; identical responses are skipped (nothing for a human to judge)."""
    ra, rb = _load(path_a), _load(path_b)
    sys_a, sys_b = _system_name(ra, Path(path_a)), _system_name(rb, Path(path_b))
    if sys_a == sys_b:
        sys_a, sys_b = f"{sys_a} ({Path(path_a).stem})", f"{sys_b} ({Path(path_b).stem})"
    if sys_a == sys_b:
        raise ValueError("both results files name the same system; rename one file")
    counts = {"added": 0, "already_queued": 0, "identical_skipped": 0, "unmatched": 0}
    rows = []
    for env_id in sorted(set(ra["envs"]) & set(rb["envs"])):
        split = ra["envs"][env_id].get("split") or rb["envs"][env_id].get("split") or "test"
        ga = {g["id"]: g for g in ra["envs"][env_id].get("generations") or []}
        gb = {g["id"]: g for g in rb["envs"][env_id].get("generations") or []}
        counts["unmatched"] += len(set(ga) ^ set(gb))
        for ex_id in sorted(set(ga) & set(gb)):
            if ga[ex_id]["prediction"].strip() == gb[ex_id]["prediction"].strip():
                counts["identical_skipped"] += 1
                continue
            prompt = ga[ex_id].get("prompt") or gb[ex_id].get("prompt") or _prompt_from_data(env_id, ex_id, split)
            rows.append((env_id, ex_id, prompt, sys_a, sys_b, ga[ex_id]["prediction"], gb[ex_id]["prediction"]))
    if not rows and not counts["identical_skipped"]:
        raise ValueError("the two results files share no (env id, example id) pairs")
    with db.tx(write=True) as tx:
        for row in rows:
            n = tx.execute(
                "INSERT INTO feedback_pairs (env_id, example_id, prompt, system_a, system_b, response_a, response_b,"
                " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (env_id, example_id, system_a, system_b)"
                " DO NOTHING", (*row, utcnow()))
            counts["added" if n == 1 else "already_queued"] += 1
        tx.audit(actor, "feedback.queue", f"{sys_a} vs {sys_b}", counts)
    return {"system_a": sys_a, "system_b": sys_b, **counts}


def _prompt_from_data(env_id: str, ex_id: str, split: str = "test") -> str:
    """The prompt of example ``ex_id`` in the task's ``split``, for results written without prompts."""
    from rlhf_gym.tasks import get_task

    for ex in get_task(env_id).examples(split):
        if ex.id == ex_id:
            return ex.prompt
    raise ValueError(f"{env_id}: example {ex_id!r} has no prompt in the results and is not in the {split} split")


def left_system(pair_id: int, annotator_id: int) -> str:
    """Which system is shown on the left: random across pairs and annotators, but stable
    for one (pair, annotator) so a reload shows the same order and it need not be sent
    back by the browser (where it could be tampered with)."""
    h = hashlib.sha256(f"{pair_id}:{annotator_id}".encode()).digest()
    return "a" if h[0] % 2 == 0 else "b"


def next_pair(db: Database, annotator_id: int) -> dict | None:
    """The least-labelled pair this annotator has not labelled yet, so labels spread over
    the queue before pairs get a second label (for agreement)."""
    with db.tx() as tx:
        row = tx.one(
            "SELECT p.id, p.env_id, p.example_id, p.prompt, p.response_a, p.response_b,"
            " (SELECT COUNT(*) FROM feedback_labels l2 WHERE l2.pair_id = p.id) AS n_labels"
            " FROM feedback_pairs p WHERE NOT EXISTS (SELECT 1 FROM feedback_labels l"
            " WHERE l.pair_id = p.id AND l.annotator_id = ?) ORDER BY n_labels, p.id LIMIT 1", (annotator_id,))
    if row is None:
        return None
    left = left_system(row["id"], annotator_id)
    row["left"], row["right"] = (
        (row["response_a"], row["response_b"]) if left == "a" else (row["response_b"], row["response_a"]))
    return row


def progress(db: Database, annotator_id: int) -> dict:
    with db.tx() as tx:
        done = tx.one("SELECT COUNT(*) AS n FROM feedback_labels WHERE annotator_id = ?", (annotator_id,))["n"]
        total = tx.one("SELECT COUNT(*) AS n FROM feedback_pairs")["n"]
    return {"done": int(done), "total": int(total)}


def add_label(db: Database, pair_id: int, annotator: dict, choice: str, comment: str = "") -> bool:
    """``choice`` is positional (``left``/``right``/``tie``/``both_bad``) as the annotator saw
    it; it is stored as a preference between systems A and B. Returns False when this
    annotator already labelled the pair (the first label is kept, never overwritten)."""
    if choice not in ("left", "right", "tie", "both_bad"):
        raise ValueError(f"choice must be left, right, tie or both_bad, got {choice!r}")
    if len(comment) > 5000:
        raise ValueError("comment longer than 5000 characters")
    left = left_system(pair_id, annotator["id"])
    label = {"left": left, "right": "b" if left == "a" else "a"}.get(choice, choice)
    with db.tx(write=True) as tx:
        if tx.one("SELECT id FROM feedback_pairs WHERE id = ?", (pair_id,)) is None:
            raise ValueError(f"no pair with id {pair_id}")
        n = tx.execute(
            "INSERT INTO feedback_labels (pair_id, annotator_id, label, left_system, comment, created)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (pair_id, annotator_id) DO NOTHING",
            (pair_id, annotator["id"], label, left, comment, utcnow()))
        if n == 1:
            tx.audit(annotator["name"], "feedback.label", str(pair_id), {"label": label})
    return n == 1


def queue_status(db: Database) -> list[dict]:
    """Per (env, system pair): pairs queued, pairs with at least one label, pairs still waiting
    for their first label, and labels by kind (decisive ``a``/``b`` labels are what
    ``export_preferences`` writes)."""
    with db.tx() as tx:
        rows = tx.all(
            "SELECT p.env_id, p.system_a, p.system_b, p.id AS pair_id, l.label FROM feedback_pairs p"
            " LEFT JOIN feedback_labels l ON l.pair_id = p.id ORDER BY p.id")
    groups: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        g = groups.setdefault((r["env_id"], r["system_a"], r["system_b"]), {
            "env_id": r["env_id"], "system_a": r["system_a"], "system_b": r["system_b"],
            "pairs": set(), "labelled_pairs": set(), "labels": {k: 0 for k in LABELS}})
        g["pairs"].add(r["pair_id"])
        if r["label"] is not None:
            g["labelled_pairs"].add(r["pair_id"])
            g["labels"][r["label"]] += 1
    out = []
    for key in sorted(groups):
        g = groups[key]
        n, done = len(g["pairs"]), len(g["labelled_pairs"])
        out.append({"env_id": g["env_id"], "system_a": g["system_a"], "system_b": g["system_b"],
                    "pairs": n, "labelled": done, "pending": n - done, "labels": g["labels"],
                    "decisive_labels": g["labels"]["a"] + g["labels"]["b"]})
    return out


def _labels(db: Database) -> list[dict]:
    with db.tx() as tx:
        return tx.all(
            "SELECT l.pair_id, l.label, l.created, u.name AS annotator, p.env_id, p.example_id, p.prompt,"
            " p.system_a, p.system_b, p.response_a, p.response_b FROM feedback_labels l"
            " JOIN feedback_pairs p ON p.id = l.pair_id JOIN users u ON u.id = l.annotator_id ORDER BY l.id")


def export_preferences(db: Database, out: str | Path) -> dict:
    """Write chosen/rejected JSONL (one line per decisive label) for ``train-rm --prefs``."""
    n = skipped = 0
    with open(out, "w", encoding="utf-8") as fh:
        for r in _labels(db):
            if r["label"] not in ("a", "b"):
                skipped += 1
                continue
            chosen, rejected = ((r["response_a"], r["response_b"]) if r["label"] == "a"
                                else (r["response_b"], r["response_a"]))
            fh.write(json.dumps({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected,
                                 "env_id": r["env_id"], "example_id": r["example_id"],
                                 "annotator": r["annotator"]}, ensure_ascii=False) + "\n")
            n += 1
    return {"written": n, "skipped_ties": skipped}


def cohen_kappa(pairs: Iterable[tuple[str, str]]) -> float | None:
    pairs = list(pairs)
    if not pairs:
        return None
    n = len(pairs)
    po = sum(a == b for a, b in pairs) / n
    ca, cb = defaultdict(int), defaultdict(int)
    for a, b in pairs:
        ca[a] += 1
        cb[b] += 1
    pe = sum(ca[c] * cb[c] for c in set(ca) | set(cb)) / (n * n)
    if pe == 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1 - pe)


def feedback_stats(db: Database) -> list[dict]:
    """Per (env, system pair): human win rate of A over B (items = pairs, several annotators
    of one pair averaged, ties and both-bad 0.5) with a 95% Wilson interval (ties as half a win; never
    [1, 1] at a rate of 1), and agreement
    between annotators on doubly-labelled pairs (raw agreement and Cohen's kappa over the
    four labels, pooling every two-annotator combination). Envs are kept apart because a
    system can win on one task and lose on another; pooling would hide that."""
    by_systems: dict[tuple[str, str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in _labels(db):
        by_systems[(r["env_id"], r["system_a"], r["system_b"])][r["pair_id"]].append(r)
    out = []
    for (env_id, sa, sb), pairs in sorted(by_systems.items()):
        item_scores = [sum(SCORE_A[l["label"]] for l in ls) / len(ls) for ls in pairs.values()]
        lo, hi = preference_interval(item_scores)
        agree_pairs = []
        for ls in pairs.values():
            for i in range(len(ls)):
                for j in range(i + 1, len(ls)):
                    a, b = sorted((ls[i], ls[j]), key=lambda x: x["annotator"])
                    agree_pairs.append((a["label"], b["label"]))
        counts = defaultdict(int)
        for ls in pairs.values():
            for l in ls:
                counts[l["label"]] += 1
        out.append({
            "env_id": env_id, "system_a": sa, "system_b": sb, "n_pairs": len(pairs),
            "annotators": sorted({l["annotator"] for ls in pairs.values() for l in ls}),
            "n_labels": sum(len(ls) for ls in pairs.values()), "labels": dict(counts),
            "win_rate_a": sum(item_scores) / len(item_scores), "ci_low": lo, "ci_high": hi,
            "n_double": sum(1 for ls in pairs.values() if len(ls) >= 2),
            "raw_agreement": (sum(a == b for a, b in agree_pairs) / len(agree_pairs)) if agree_pairs else None,
            "cohen_kappa": cohen_kappa(agree_pairs),
        })
    return out
