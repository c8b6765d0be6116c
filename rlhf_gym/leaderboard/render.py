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
                       link=lambda sid: f"{link_prefix}{sid}{link_suffix}", score_vs_length_svg=score_vs_length_svg,
                       overopt_svg=overopt_svg, overopt_peak=overopt_peak)
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


def _ticks(low: float, high: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values covering [low, high]."""
    import math

    span = high - low
    if span <= 0:
        return [low]
    raw = span / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def overopt_peak(view: dict) -> str:
    """One line on the gold fit's peak, for captions and tables."""
    peak = view.get("gold_peak")
    fit = (view.get("fits") or {}).get(view.get("decoding"), {}).get("gold", {})
    if peak:
        return f"gold fit peaks at KL {peak['peak_kl']:.3g} (√KL {peak['peak_sqrt_kl']:.3g}), gain {peak['peak_gain']:+.3g}"
    if "beta" in fit:
        return "gold fit has no peak (β ≤ 0: still rising over the measured range)"
    return f"no gold fit ({fit.get('error', 'too few points')})"


def overopt_svg(view: dict, *, panel_width: int = 270, panel_height: int = 180) -> str:
    """Proxy and gold gain over the starting policy against sqrt(KL), one panel each (their scales
    differ by orders of magnitude), with the Gao fit ``d (alpha - beta log d)`` recomputed by the
    server and the gold fit's peak. Points are hollow: they are self-reported. Inline SVG, so the
    request path needs no plotting library."""
    import math

    import numpy as np

    from rlhf_gym.overopt import gao_curve

    decoding = view["decoding"]
    rows = [r for r in view["rows"] if r.get("sqrt_kl") is not None and decoding in r]
    fits = view["fits"].get(decoding, {})
    peak = view.get("gold_peak")
    pad_l, pad_r, pad_t, pad_b, gap = 52, 10, 22, 34, 16
    pw, ph = panel_width - pad_l - pad_r, panel_height - pad_t - pad_b
    width, height = 2 * panel_width + gap, panel_height
    xmax = max([r["sqrt_kl"] for r in rows] + [0.0])
    if peak and peak["peak_sqrt_kl"] <= 2 * xmax:
        xmax = max(xmax, peak["peak_sqrt_kl"])
    xmax = xmax * 1.1 or 1.0
    grid = np.linspace(0.0, xmax, 80)
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="plot overopt" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="proxy and gold score gain versus sqrt(KL)">')]
    for k, (which, colour) in enumerate((("proxy", "#1f77b4"), ("gold", "#ff7f0e"))):
        x0 = k * (panel_width + gap) + pad_l
        gains = [r[decoding].get(f"{which}_gain") for r in rows]
        errs = [1.96 * (r[decoding].get(f"{which}_gain_se") or 0.0) for r in rows]
        fit = fits.get(which, {})
        curve = gao_curve(grid, fit["alpha"], fit["beta"]) if "alpha" in fit else None
        ys = [g + e for g, e in zip(gains, errs) if g is not None] + [g - e for g, e in zip(gains, errs)
                                                                      if g is not None] + [0.0]
        if curve is not None:
            ys += [float(v) for v in curve]
        lo, hi = min(ys), max(ys)
        if hi - lo < 1e-12:
            lo, hi = lo - 1.0, hi + 1.0
        lo, hi = lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)

        def px(d: float, x0: float = x0) -> float:
            return x0 + pw * d / xmax

        def py(v: float, lo: float = lo, hi: float = hi) -> float:
            return pad_t + ph * (1 - (v - lo) / (hi - lo))

        parts.append(f'<rect x="{x0}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>')
        for t in _ticks(lo, hi, 4):
            parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e3e3e3"/>')
            parts.append(f'<text x="{x0 - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>')
        for t in _ticks(0.0, xmax, 4):
            parts.append(f'<text x="{px(t):.1f}" y="{pad_t + ph + 13}" text-anchor="middle" font-size="10">'
                         f'{t:.3g}</text>')
        if lo < 0 < hi:
            parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{py(0):.1f}" y2="{py(0):.1f}" stroke="#888" '
                         'stroke-width="0.8"/>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{height - 4}" text-anchor="middle" font-size="11">'
                     '√KL to the starting policy</text>')
        model = html.escape(str((view.get(which) or {}).get("name") or ""))
        parts.append(f'<text x="{x0 + pw / 2}" y="{pad_t - 7}" text-anchor="middle" font-size="11">{which} gain'
                     f'{f" ({model})" if model else ""}</text>')
        if curve is not None:
            path = " ".join(f"{px(d):.1f},{py(float(v)):.1f}" for d, v in zip(grid, curve))
            r2 = "" if fit.get("r2") is None else f', R²={fit["r2"]:.2f}'
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"><title>'
                         f'{which} fit (recomputed): d(α − β log d), α={fit["alpha"]:.4g}, β={fit["beta"]:.4g}{r2}'
                         '</title></polyline>')
        for r, g, e in zip(rows, gains, errs):
            if g is None:
                continue
            x = px(r["sqrt_kl"])
            if e > 0:
                parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(g - e):.1f}" y2="{py(g + e):.1f}" '
                             f'stroke="{colour}" stroke-width="0.8"/>')
            title = html.escape(f"iteration {r['iteration']}: KL {r['sqrt_kl'] ** 2:.3g}, {which} gain {g:+.4g}"
                                + (f" ± {e:.3g} (95%)" if e > 0 else "") + " (self-reported point)")
            parts.append(f'<circle cx="{x:.1f}" cy="{py(g):.1f}" r="3.5" fill="#fff" stroke="{colour}" '
                         f'stroke-width="1.5"><title>{title}</title></circle>')
        if which == "gold" and peak and math.isfinite(peak["peak_sqrt_kl"]) and peak["peak_sqrt_kl"] <= xmax:
            x, y = px(peak["peak_sqrt_kl"]), py(peak["peak_gain"])
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{pad_t}" y2="{pad_t + ph}" stroke="{colour}" '
                         'stroke-dasharray="3,3"/>')
            parts.append(f'<path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y:.1f} L{x:.1f},{y + 5:.1f} '
                         f'L{x - 5:.1f},{y:.1f} Z" fill="{colour}" class="peak"><title>'
                         f'{html.escape(overopt_peak(view))}</title></path>')
    parts.append("</svg>")
    return "".join(parts)


def markdown_board(board: dict, curves: list[dict] | None = None) -> str:
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
    if curves:
        lines += ["", "## Over-optimisation curves of the training runs", "",
                  "Points (KL, proxy and gold means) are self-reported; the fits are recomputed from them.", "",
                  "| system | run env | points | gold fit | fit recomputed |", "|---|---|---|---|---|"]
        for c in curves:
            v = c["overopt"]
            lines.append(f"| {_md(c['name'])} | {v['env_id']} | {len(v['rows'])} | {overopt_peak(v)}"
                         f" | {'✓ matches' if v['fit_verified'] else '✗ differs'} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def copy_static(out: Path) -> None:
    dest = out / "static"
    dest.mkdir(parents=True, exist_ok=True)
    for f in STATIC.iterdir():
        if f.is_file():
            shutil.copy2(f, dest / f.name)
