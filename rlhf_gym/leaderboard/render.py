"""HTML (jinja2), Markdown and inline-SVG rendering shared by the server and the static
site builder. No external assets: pages must work offline."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

from . import require

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def rate_pct(mean: Any, low: Any = None, high: Any = None) -> str:
    """``mean [low, high]`` in percent with one decimal, the interval rounded outwards so the
    printed mean never falls outside it (``rlhf_gym.metrics.format_rate``)."""
    from rlhf_gym.metrics import format_rate

    if mean is None:
        return "–"
    return format_rate({"mean": mean, "ci_low": low, "ci_high": high}, digits=1, percent=True)


def win_rate_cell(row: dict, key: str = "win_rate") -> str:
    lo, hi = (row.get(f"{key}_ci") or [None, None])[:2]
    return rate_pct(row.get(key), lo, hi)


def environment(static_prefix: str = "/static", link_prefix: str = "/submissions/", link_suffix: str = ""):
    jinja2 = require("jinja2")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.globals.update(fmt=fmt, fmt_pct=fmt_pct, win_rate_cell=win_rate_cell, rate_pct=rate_pct, static=static_prefix,
                       link=lambda sid: f"{link_prefix}{sid}{link_suffix}", score_vs_length_svg=score_vs_length_svg)
    return env


def score_vs_length_svg(rows: list[dict], *, width: int = 560, height: int = 300) -> str:
    """Scatter of judge win rate against mean response length, one colour per env: the
    plot that makes length hacking visible at a glance."""
    pts = [r for r in rows if r.get("win_rate") is not None and r.get("mean_words") is not None]
    pad_l, pad_r, pad_t, pad_b = 50, 160, 15, 40
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="win rate versus mean length">',
             f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>']
    if not pts:
        parts.append(f'<text x="{pad_l + pw / 2}" y="{pad_t + ph / 2}" text-anchor="middle">no data yet</text></svg>')
        return "".join(parts)
    xmax = max(r["mean_words"] for r in pts) * 1.1 or 1.0
    envs = sorted({r["env_id"] for r in pts})
    colour = {e: PALETTE[i % len(PALETTE)] for i, e in enumerate(envs)}
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        y = pad_t + ph * (1 - frac)
        x = pad_l + pw * frac
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{frac * 100:.0f}</text>')
        parts.append(f'<text x="{x:.1f}" y="{pad_t + ph + 15}" text-anchor="middle" font-size="11">'
                     f'{xmax * frac:.{0 if xmax >= 20 else 1}f}</text>')
    parts.append(f'<text x="{pad_l + pw / 2}" y="{height - 5}" text-anchor="middle" font-size="12">'
                 'mean response length (words)</text>')
    parts.append(f'<text x="14" y="{pad_t + ph / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {pad_t + ph / 2})">win rate vs reference (%)</text>')
    for r in pts:
        x = pad_l + pw * r["mean_words"] / xmax
        y = pad_t + ph * (1 - max(0.0, min(1.0, r["win_rate"])))
        title = html.escape(f'{r["name"]} on {r["env_id"]}: {100 * r["win_rate"]:.1f}% at {r["mean_words"]:.1f} words')
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour[r["env_id"]]}" fill-opacity="0.8">'
                     f'<title>{title}</title></circle>')
    for i, e in enumerate(envs):
        y = pad_t + 12 + 18 * i
        parts.append(f'<circle cx="{pad_l + pw + 15}" cy="{y - 4}" r="5" fill="{colour[e]}"/>')
        parts.append(f'<text x="{pad_l + pw + 25}" y="{y}" font-size="11">{html.escape(e.split("/")[-1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def markdown_board(board: dict) -> str:
    lines = ["# rlhf-gym leaderboard", "",
             "Metrics are recomputed from the submitted generations; ✓ = submitted numbers match.", "",
             "## Overall (mean length-controlled win rate vs each task's baseline agent)", "",
             "| # | system | envs | LC win rate vs baseline % [95% CI] | win rate vs reference % | reward | mean words"
             " | date | verified |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(board["overall"], 1):
        lines.append(f"| {i} | {_md(r['name'])} | {len(r['envs'])} | {win_rate_cell(r, 'lc_vs_baseline')}"
                     f" | {fmt_pct(r['win_rate'])} | {fmt(r['reward'], 3)}"
                     f" | {fmt(r['mean_words'], 1)} | {r['date']} | {'✓' if r['verified'] else '✗'} |")
    for env_id, rows in board["envs"].items():
        lines += ["", f"## {env_id} (ranked by {board['primary'][env_id]})", "",
                  "| # | system | BLEU | chrF | ROUGE-L | reward | win rate vs reference % [95% CI]"
                  " | LC win rate vs baseline % [95% CI] | mean words | date | verified |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rows, 1):
            lines.append(f"| {i} | {_md(r['name'])} | {fmt(r['bleu'])} | {fmt(r['chrf'])} | {fmt(r['rougeL'])}"
                         f" | {fmt(r['reward'], 3)} | {win_rate_cell(r)} | {win_rate_cell(r, 'lc_vs_baseline')}"
                         f" | {fmt(r['mean_words'], 1)} | {r['date']} | {'✓' if r['verified'] else '✗'} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def copy_static(out: Path) -> None:
    dest = out / "static"
    dest.mkdir(parents=True, exist_ok=True)
    for f in STATIC.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
