"""Over-optimisation curves of a PPO/RLOO run (``rlhf-gym overopt RUN_DIR``).

For the run's starting policy (KL 0) and every policy it kept (``RUN_DIR/snapshots/iter_*``,
written with ``--snapshot-every``, and the final policy in ``RUN_DIR`` itself), on the first
``limit`` prompts of a held-out split (validation by default):

- **KL to the starting policy**, measured (``kl="measured"``, the default): responses are
  sampled from the policy at the run's temperature with the run's ``max_new_tokens``, and
  ``sum_t log pi(y_t) - log pi_0(y_t)`` (temperature-scaled log-probs, the trainer's k1
  estimator; k3 is reported beside it) is averaged over the samples: a Monte Carlo estimate of
  KL(pi || pi_0) on held-out prompts, in the same units as the trainer's logged ``kl``.
  ``kl="train"`` uses the run's logged training KL at that iteration instead (``metrics.jsonl``:
  measured on training prompts, on the rollout batch of that iteration).
- **proxy**: the run's training reward (its ``ppo_config.json`` reward spec and safety penalty,
  scored by stepping the env, :class:`rlhf_gym.evaluation.EnvScorer`);
- **gold**: the env's judge (what ``bench`` win rates use), on the same responses.

Scores are of the sampled responses (``decoding="sample"``: the policy the KL describes), of
greedy outputs (``"greedy"``: what ``bench`` evaluates), or both. Then Gao et al. (2022)'s RL
form ``R(d) = d (alpha - beta log d)``, ``d = sqrt(KL)``, is fitted by least squares to the
score gain over the starting policy, for proxy and gold; with ``beta > 0`` the curve peaks at
``d* = exp(alpha / beta - 1)``. Results go to ``RUN_DIR/overopt.json`` (rewritten after each
policy, and reused on a rerun with the same settings, so a killed run resumes) and a PNG.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SCHEMA = "rlhf_gym.overopt/1"
DECODINGS = ("sample", "greedy", "both")
KL_SOURCES = ("measured", "train")


# ------------------------------------------------------------------------------ the fit


def gao_curve(d, alpha: float, beta: float) -> np.ndarray:
    """``R(d) = d (alpha - beta log d)``, with ``R(0) = 0``."""
    d = np.asarray(d, dtype=np.float64)
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)


def fit_gao(d: Sequence[float], gain: Sequence[float]) -> dict[str, Any]:
    """Least-squares fit of ``gain = d (alpha - beta log d)`` (linear in alpha and beta), over
    the points with ``d > 0`` (the start, d = 0, has gain 0 under every alpha, beta).

    Returns alpha, beta, the number of points, R^2 (about the mean gain) and the RMSE; with
    ``beta > 0`` also the peak ``sqrt_kl``/``kl``/``gain`` of the fitted curve. Fewer than two
    points with ``d > 0`` is an error (two parameters)."""
    d = np.asarray(d, dtype=np.float64)
    gain = np.asarray(gain, dtype=np.float64)
    if d.shape != gain.shape:
        raise ValueError(f"d and gain differ in length ({d.size} vs {gain.size})")
    keep = (d > 0) & np.isfinite(d) & np.isfinite(gain)
    if keep.sum() < 2:
        raise ValueError(f"the fit needs at least 2 checkpoints with KL > 0, got {int(keep.sum())}")
    d, gain = d[keep], gain[keep]
    design = np.stack([d, -d * np.log(d)], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    predicted = design @ np.array([alpha, beta])
    ss_res = float(((gain - predicted) ** 2).sum())
    ss_tot = float(((gain - gain.mean()) ** 2).sum())
    out: dict[str, Any] = {"alpha": float(alpha), "beta": float(beta), "n_points": int(d.size),
                           "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
                           "rmse": math.sqrt(ss_res / d.size)}
    if beta > 0:
        peak = math.exp(alpha / beta - 1.0)
        out.update({"peak_sqrt_kl": peak, "peak_kl": peak * peak, "peak_gain": float(beta * peak)})
    return out


# ------------------------------------------------------------------------- the run


def read_run(run_dir: str | Path, start: str | None = None
             ) -> tuple[dict[str, Any], list[tuple[int, str]], dict[int, float]]:
    """``(config, [(iteration, policy spec)], {iteration: training kl of that policy})`` of a run:
    the starting policy (``start``, default the run's ``policy``) at iteration 0, every snapshot,
    and the final policy when ``RUN_DIR`` holds one that is not also a snapshot.

    The trainer logs at iteration ``i`` the KL of the rollout that iteration generated, i.e. of
    the weights *before* its update; a snapshot ``iter_i`` is saved *after* the update, so its
    training KL is the one logged at iteration ``i + 1`` (absent for the last iteration)."""
    from rlhf_gym.policy import POLICY_META, PolicyMeta, default_policy_spec, repo_root

    run = Path(run_dir)
    config_path = run / "ppo_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run} is not a PPO/RLOO run directory (no ppo_config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    start = start or config.get("policy") or default_policy_spec(config["env_id"])
    if not Path(start).expanduser().exists() and (repo_root() / start / POLICY_META).exists():
        start = str(repo_root() / start)  # a relative path the run was started with from the checkout
    policies = [(0, str(start))]
    for snap in sorted((run / "snapshots").glob("iter_*")):
        try:
            iteration = int(snap.name.split("_", 1)[1])
        except ValueError:
            continue
        if (snap / POLICY_META).exists():
            policies.append((iteration, str(snap)))
    if (run / POLICY_META).exists():
        final = int(PolicyMeta.load(run).info.get("iteration") or config.get("iterations") or 0)
        if final and final not in {i for i, _ in policies}:
            policies.append((final, str(run)))
    policies.sort()
    train_kl: dict[int, float] = {}
    if (run / "metrics.jsonl").exists():
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                train_kl[int(record["iteration"]) - 1] = float(record["kl"])  # the weights after iteration - 1
    return config, policies, train_kl


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), se


def _score_block(texts: list[str], proxy: np.ndarray, gold: np.ndarray, has_eos=None) -> dict[str, Any]:
    from rlhf_gym import metrics

    words = [len(t.split()) for t in texts]
    proxy_mean, proxy_se = _mean_se(proxy)
    gold_mean, gold_se = _mean_se(gold)
    block = {"n": len(texts), "proxy_mean": proxy_mean, "proxy_se": proxy_se, "gold_mean": gold_mean,
             "gold_se": gold_se, "mean_words": float(np.mean(words)) if words else float("nan"),
             "median_words": float(np.median(words)) if words else float("nan"),
             "most_repeated_share": metrics.most_repeated_share(texts)["share"]}
    if has_eos is not None:
        block["eos_fraction"] = float(np.mean(has_eos))
    # per response, in prompt order (a prompt's samples together): paired gains need them
    block["texts"], block["proxy_scores"], block["gold_scores"] = list(texts), proxy.tolist(), gold.tolist()
    return block


class _Measurer:
    """Loads what every policy is measured with once: prompts, the reference (starting) policy,
    the proxy scorer and the judge."""

    def __init__(self, config: dict[str, Any], *, split: str, limit: int, samples: int, seed: int,
                 reward: str | None, device: str, batch_size: int, show_progress: bool):
        from rlhf_gym.evaluation import EnvScorer
        from rlhf_gym.tasks import get_task

        self.config, self.samples, self.seed, self.batch_size = config, samples, seed, batch_size
        self.device, self.show_progress = device, show_progress
        self.task = get_task(config["env_id"])
        examples = self.task.examples(split)
        if limit is not None:
            examples = examples[:limit]
        self.examples = examples
        self.temperature = float(config.get("temperature") or 1.0)
        self.scorer = EnvScorer(self.task, split, reward=reward or config.get("reward") or "builtin",
                                safety_coef=float(config.get("safety_coef") or 0.0))
        self.prompts, _ = self.scorer.observe(range(len(examples)))
        self.judge = self.task.judge_model()
        self._ref = None

    def reference(self, start_spec: str):
        if self._ref is None:
            from rlhf_gym.policy import resolve_policy

            self._ref = resolve_policy(start_spec, self.task.env_id, self.device)[0]
        return self._ref

    def _score(self, indices: list[int], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from rlhf_gym.evaluation import score_in_batches

        proxy, _ = self.scorer.score(indices, texts, "proxy", self.show_progress)
        prompts = [self.prompts[i] for i in indices]
        refs = [list(self.examples[i].references) for i in indices]
        gold = score_in_batches(self.judge, prompts, texts, refs, "gold", self.show_progress)
        return np.asarray(proxy, dtype=np.float64), np.asarray(gold, dtype=np.float64)

    def measure(self, spec: str, start_spec: str, *, decodings: Sequence[str], with_kl: bool) -> dict[str, Any]:
        import torch

        from rlhf_gym.policy import generate, resolve_policy
        from rlhf_gym.ppo.core import kl_estimate
        from rlhf_gym.envs.text_env import fit_action
        from rlhf_gym.ppo.rollout import logprobs

        model, tok, meta = resolve_policy(spec, self.task.env_id, self.device)
        if self.config.get("max_prompt_len"):
            meta.max_prompt_len = int(self.config["max_prompt_len"])
        limit = self.task.max_response_chars
        row: dict[str, Any] = {}
        n = len(self.examples)
        if "sample" in decodings:
            max_new = int(self.config.get("max_new_tokens") or meta.max_new_tokens)
            ref = self.reference(start_spec) if with_kl else None
            texts, indices, eos, kl1, kl3 = [], [], [], [], []
            for start in range(0, n, self.batch_size):
                batch = list(range(start, min(n, start + self.batch_size)))
                torch.manual_seed(self.seed + start)
                q, qm, r, rm, out, has_eos = generate(model, tok, meta, [self.prompts[i] for i in batch],
                                                      max_new_tokens=max_new, temperature=self.temperature,
                                                      do_sample=True, num_return_sequences=self.samples)
                texts += [fit_action(t, limit) for t in out]
                indices += [i for i in batch for _ in range(self.samples)]
                eos += has_eos.tolist()
                if ref is not None:
                    with torch.no_grad():
                        dev = next(model.parameters()).device
                        args = [t.to(dev) for t in (q, qm, r, rm)]
                        logp = logprobs(model, *args, self.temperature)[0]
                        ref_logp = logprobs(ref, *args, self.temperature)[0]
                        mask = args[3].float()
                        kl1 += (kl_estimate(logp, ref_logp, "k1") * mask).sum(1).cpu().tolist()
                        kl3 += (kl_estimate(logp, ref_logp, "k3") * mask).sum(1).cpu().tolist()
            row["sample"] = _score_block(texts, *self._score(indices, texts), eos)
            if ref is not None:
                row["kl"], row["kl_se"] = _mean_se(kl1)
                row["kl_k3"], row["kl_k3_se"] = _mean_se(kl3)
        if "greedy" in decodings:
            texts = []
            for start in range(0, n, self.batch_size):
                *_, out, _ = generate(model, tok, meta, self.prompts[start:start + self.batch_size],
                                      max_new_tokens=meta.max_new_tokens, do_sample=False)
                texts += [fit_action(t, limit) for t in out]
            row["greedy"] = _score_block(texts, *self._score(list(range(n)), texts))
        del model
        return row

    def rescore(self, row: dict[str, Any]) -> None:
        """Per-response scores for a row measured before they were stored, from its stored texts."""
        n = len(self.examples)
        for decoding in ("sample", "greedy"):
            block = row.get(decoding)
            if block and "texts" in block and "gold_scores" not in block:
                k = len(block["texts"]) // n
                indices = [i for i in range(n) for _ in range(k)]
                fresh = _score_block(block["texts"], *self._score(indices, block["texts"]))
                block.update({key: fresh[key] for key in ("proxy_mean", "proxy_se", "gold_mean", "gold_se",
                                                          "proxy_scores", "gold_scores")})


def overopt(run_dir: str | Path, *, limit: int | None = 32, split: str = "validation", samples: int = 1,
            seed: int = 0, decoding: str = "sample", kl: str = "measured", reward: str | None = None,
            device: str = "cpu", batch_size: int = 16, out: str | Path | None = None,
            plot: str | Path | None | bool = True, overwrite: bool = False, start: str | None = None,
            show_progress: bool = True) -> dict[str, Any]:
    """Measure every kept policy of the run in ``run_dir`` (see the module docstring), fit the
    curves, write ``out`` (default ``RUN_DIR/overopt.json``) and ``plot`` (default
    ``RUN_DIR/overopt.png``; False: none) and return the report."""
    from rlhf_gym.data import normalize_split
    from rlhf_gym.evaluation import write_json_atomic

    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}, got {decoding!r}")
    if kl not in KL_SOURCES:
        raise ValueError(f"kl must be one of {', '.join(KL_SOURCES)}, got {kl!r}")
    decodings = ("sample", "greedy") if decoding == "both" else (decoding,)
    if kl == "measured" and "sample" not in decodings:
        raise ValueError("kl='measured' samples from each policy: use decoding 'sample' or 'both', or kl='train'")
    if limit is not None and limit < 2:
        raise ValueError(f"--limit must be >= 2, got {limit}")
    if samples < 1 or batch_size < 1:
        raise ValueError("--samples and --batch-size must be >= 1")
    split = normalize_split(split)
    if split == "test":
        print("warning: over-optimisation on the test split; choose checkpoints on validation", file=sys.stderr)
    run = Path(run_dir)
    config, policies, train_kl = read_run(run, start)
    if len(policies) < 2:
        raise ValueError(f"{run} kept no policy besides its start: train with --snapshot-every N")
    out = Path(out) if out else run / "overopt.json"
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = {"split": split, "limit": limit, "samples_per_prompt": samples, "seed": seed,
                "decoding": decoding, "kl": kl, "proxy": reward or config.get("reward") or "builtin",
                "temperature": float(config.get("temperature") or 1.0)}
    rows: dict[int, dict[str, Any]] = {}
    previous: dict[str, Any] = {}
    if out.exists():
        previous = json.loads(out.read_text(encoding="utf-8"))
        if previous.get("settings") == settings:
            rows = {r["iteration"]: r for r in previous.get("rows", []) if r.get("policy") in dict(policies).values()}
            for r in rows.values():  # metadata, re-read (the run may have logged more since)
                r["train_kl"] = 0.0 if r["iteration"] == 0 else train_kl.get(r["iteration"])
        elif not overwrite:
            raise ValueError(f"{out} was written with other settings ({previous.get('settings')}); pass --overwrite "
                             "to replace it, or --out another file")

    measurer = None
    report: dict[str, Any] = {}
    from tqdm.auto import tqdm

    stale = [r for r in rows.values() if any(d in r and "gold_scores" not in r[d] for d in decodings)]
    if stale:
        measurer = _Measurer(config, split=split, limit=limit, samples=samples, seed=seed, reward=reward,
                             device=device, batch_size=batch_size, show_progress=False)
        for r in stale:
            measurer.rescore(r)
    todo = [(i, spec) for i, spec in policies if i not in rows]
    if rows:
        print(f"{len(rows)} policies already measured in {out}; measuring {len(todo)}", file=sys.stderr)
    for iteration, spec in tqdm(todo, desc="overopt", unit="policy", disable=not show_progress):
        if measurer is None:
            measurer = _Measurer(config, split=split, limit=limit, samples=samples, seed=seed, reward=reward,
                                 device=device, batch_size=batch_size, show_progress=False)
        row = {"iteration": iteration, "policy": spec, "train_kl": 0.0 if iteration == 0 else train_kl.get(iteration)}
        with_kl = kl == "measured" and iteration > 0
        row.update(measurer.measure(spec, policies[0][1], decodings=decodings, with_kl=with_kl))
        if iteration == 0 and kl == "measured":
            row.update({"kl": 0.0, "kl_se": 0.0, "kl_k3": 0.0, "kl_k3_se": 0.0})  # the reference itself
        rows[iteration] = row
        report = _report(run, config, settings, [rows[i] for i in sorted(rows)], measurer)
        write_json_atomic(out, report)
        summary = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in _flat(row).items()}
        print(json.dumps(summary), file=sys.stderr)
    if not report:  # everything was measured before: refit and rewrite
        report = _report(run, config, settings, [rows[i] for i in sorted(rows)], measurer)
        report.update({k: previous[k] for k in ("proxy", "gold", "n_prompts") if k in previous})
        write_json_atomic(out, report)
    if plot:
        path = run / "overopt.png" if plot is True else Path(plot)
        if plot_overopt(report, path):
            report["plot"] = str(path)
    return report


def _paired_se(scores, start_scores, per_prompt: int) -> float | None:
    """Standard error of the mean gain over the start, paired by prompt (both policies answered
    the same prompts; a prompt's samples are averaged first)."""
    if not scores or not start_scores:
        return None
    a = np.asarray(scores, dtype=np.float64).reshape(-1, per_prompt).mean(axis=1)
    b = np.asarray(start_scores, dtype=np.float64).reshape(-1, per_prompt).mean(axis=1)
    diff, n = a - b, a.size
    return float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else None


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """The row's numbers, one level deep (for progress lines and tables)."""
    flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
    for decoding in ("sample", "greedy"):
        if decoding in row:
            flat.update({f"{decoding}_{k}": v for k, v in row[decoding].items()
                         if k not in ("texts", "proxy_scores", "gold_scores")})
    return flat


def _kl_of(row: dict[str, Any], kl: str) -> float | None:
    value = row.get("kl") if kl == "measured" else row.get("train_kl")
    return None if value is None else float(value)


def fit_curves(rows: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Everything derived from the measured points: each row's gains over the start (iteration 0)
    with their paired standard errors (None without per-response scores), its ``sqrt_kl``, and
    the Gao fits per decoding (``{"error": ...}`` where there are too few points). Sets the
    derived fields on ``rows`` and returns the fits. The leaderboard re-derives a submitted curve
    with it (``rlhf_gym.leaderboard.overopt_curve``)."""
    start = next((r for r in rows if r["iteration"] == 0), None)
    fits: dict[str, Any] = {}
    for decoding in ("sample", "greedy"):
        if not all(decoding in r for r in rows) or start is None:
            continue
        for r in rows:
            for which in ("proxy", "gold"):
                block, base = r[decoding], start[decoding]
                block[f"{which}_gain"] = block[f"{which}_mean"] - base[f"{which}_mean"]
                per_prompt = settings["samples_per_prompt"] if decoding == "sample" else 1
                block[f"{which}_gain_se"] = _paired_se(block.get(f"{which}_scores"), base.get(f"{which}_scores"),
                                                       per_prompt)
        points = [(r, _kl_of(r, settings["kl"])) for r in rows]
        points = [(r, x) for r, x in points if x is not None]
        d = [math.sqrt(max(x, 0.0)) for _, x in points]
        fits[decoding] = {}
        for which in ("proxy", "gold"):
            try:
                fits[decoding][which] = fit_gao(d, [r[decoding][f"{which}_gain"] for r, _ in points])
            except ValueError as err:
                fits[decoding][which] = {"error": str(err)}
    for r in rows:
        x = _kl_of(r, settings["kl"])
        r["sqrt_kl"] = math.sqrt(max(x, 0.0)) if x is not None else None
    return fits


def _report(run: Path, config: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, Any]],
            measurer) -> dict[str, Any]:
    """The JSON report: rows with gains over the start, and the fits (when there are enough points)."""
    from rlhf_gym.evaluation import _model_id

    fits = fit_curves(rows, settings)
    report = {
        "schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": str(run), "env_id": config["env_id"], "algo": config.get("algo"), "settings": settings,
        "kl_definition": ("mean over sampled responses of sum_t [log pi(y_t) - log pi_0(y_t)] (temperature-scaled, "
                          "k1; kl_k3 beside it) on the split's prompts" if settings["kl"] == "measured" else
                          "the run's logged training KL of these weights (metrics.jsonl 'kl' at iteration + 1)"),
        "fit": "gain over the start = d (alpha - beta log d), d = sqrt(KL), least squares (Gao et al. 2022)",
        "rows": rows, "fits": fits,
    }
    if measurer is not None:
        report["proxy"] = _model_id(measurer.scorer.reward_model)
        report["gold"] = _model_id(measurer.judge)
        report["n_prompts"] = len(measurer.examples)
    return report


# ------------------------------------------------------------------------------- output


def plot_overopt(report: dict[str, Any], path: str | Path) -> Path | None:
    """Proxy and gold gain against sqrt(KL) with the fitted curves (matplotlib is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the plot (pip install rlhf-gym[plot])", file=sys.stderr)
        return None
    decoding = "sample" if "sample" in report["fits"] else ("greedy" if "greedy" in report["fits"] else None)
    if decoding is None:
        return None
    rows = [r for r in report["rows"] if r.get("sqrt_kl") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, which, color in ((axes[0], "proxy", "tab:blue"), (axes[1], "gold", "tab:orange")):
        d = np.array([r["sqrt_kl"] for r in rows])
        gain = np.array([r[decoding][f"{which}_gain"] for r in rows])
        se = np.array([r[decoding].get(f"{which}_gain_se") for r in rows], dtype=np.float64)
        ax.errorbar(d, gain, yerr=1.96 * np.nan_to_num(se), fmt="o", color=color, capsize=3,
                    label=f"{which} gain ({decoding}), 95% CI paired by prompt")
        for r, x, y in zip(rows, d, gain):
            ax.annotate(str(r["iteration"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        fit = report["fits"][decoding].get(which, {})
        if "alpha" in fit and d.max() > 0:
            grid = np.linspace(0, d.max() * 1.15, 200)
            ax.plot(grid, gao_curve(grid, fit["alpha"], fit["beta"]), color=color, alpha=0.7,
                    label=f"d(α-β log d): α={fit['alpha']:.3g}, β={fit['beta']:.3g}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("d = sqrt(KL to the starting policy)")
        ax.set_ylabel(f"{which} score gain over the start")
        ax.set_title(f"{which}: {report.get(which, {}).get('name', '')}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    n = report.get("n_prompts", report["settings"]["limit"])
    fig.suptitle(f"{report['env_id']} {report.get('algo') or ''}: {Path(report['run']).name}, "
                 f"{report['settings']['split']} (n={n}), KL {report['settings']['kl']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def overopt_table(report: dict[str, Any]):
    from rich.table import Table

    settings = report["settings"]
    decodings = [d for d in ("sample", "greedy") if all(d in r for r in report["rows"])]
    table = Table(title=f"overopt {report['env_id']}: {report['run']} ({settings['split']}, "
                        f"n={report.get('n_prompts', settings['limit'])}, KL {settings['kl']})")
    columns = ["iter", "KL", "train KL"]
    for decoding in decodings:
        columns += [f"proxy ({decoding})", f"gold ({decoding})", "gold gain [95% CI]", "words"]
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for row in report["rows"]:
        kl = row.get("kl")
        cells = [str(row["iteration"]), "-" if kl is None else f"{kl:.2f} ± {1.96 * (row.get('kl_se') or 0):.2f}",
                 "-" if row.get("train_kl") is None else f"{row['train_kl']:.2f}"]
        for decoding in decodings:
            b = row[decoding]
            gain, se = b.get("gold_gain"), b.get("gold_gain_se")
            cells += [f"{b['proxy_mean']:.3f}", f"{b['gold_mean']:.4f}",
                      "-" if gain is None else f"{gain:+.4f}" + ("" if se is None else f" ± {1.96 * se:.4f}"),
                      f"{b['median_words']:.0f}"]
        table.add_row(*cells)
    for decoding, fits in report["fits"].items():
        for which, fit in fits.items():
            if "alpha" in fit:
                peak = f", peak at KL {fit['peak_kl']:.2f}" if "peak_kl" in fit else ", no peak (beta <= 0)"
                table.caption = (table.caption + "\n" if table.caption else "") + (
                    f"{which} ({decoding}): alpha {fit['alpha']:.4g}, beta {fit['beta']:.4g}, "
                    f"R² {fit['r2']:.2f}{peak}")
    return table


def register(subparsers) -> None:
    p = subparsers.add_parser("overopt", help="over-optimisation curve of a PPO/RLOO run: KL, proxy and gold score "
                                              "of every snapshot on held-out prompts, with Gao et al.'s fit")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `train ppo|rloo` output directory (with snapshots/)")
    p.add_argument("--limit", type=int, default=32, help="the first N prompts of the split (default 32)")
    p.add_argument("--split", default="validation", help="default validation (never choose checkpoints on test)")
    p.add_argument("--samples", type=int, default=1, help="sampled responses per prompt (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoding", default="sample", choices=DECODINGS,
                   help="score sampled responses (default; the policy the KL describes), greedy outputs (what "
                        "bench evaluates), or both")
    p.add_argument("--kl", default="measured", choices=KL_SOURCES,
                   help="measured on the split's prompts (default), or the run's logged training KL")
    p.add_argument("--reward", default=None, help="the proxy's reward spec (default: the run's, from ppo_config.json)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    p.add_argument("--out", default=None, help="report JSON (default RUN_DIR/overopt.json)")
    p.add_argument("--plot", default=None, help="PNG path (default RUN_DIR/overopt.png)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an --out written with other settings")
    p.add_argument("--start", default=None, help="the run's starting policy spec (default: from ppo_config.json)")
    p.set_defaults(handler=cmd_overopt)


def cmd_overopt(args) -> int:
    from rich.console import Console

    report = overopt(args.run_dir, limit=args.limit, split=args.split, samples=args.samples, seed=args.seed,
                     decoding=args.decoding, kl=args.kl, reward=args.reward, device=args.device,
                     batch_size=args.batch_size, out=args.out, plot=False if args.no_plot else (args.plot or True),
                     overwrite=args.overwrite, start=args.start)
    Console(width=None if sys.stdout.isatty() else 160).print(overopt_table(report))
    plot = f" and {report['plot']}" if report.get("plot") else ""
    print(f"wrote {args.out or Path(args.run_dir) / 'overopt.json'}{plot}")
    return 0
