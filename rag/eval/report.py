"""Human-readable output of an evaluation run: report.md and PNG charts (matplotlib, Agg)."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rag.eval.metrics import lower_is_better, metric_names

logger = logging.getLogger(__name__)

# Settings worth a line in the report; the full dump is in summary.json.
_REPORT_SETTINGS = (
    "embed_backend",
    "embed_model",
    "mode",
    "backend",
    "chunk_size",
    "chunk_overlap",
    "top_k",
    "candidates",
    "dense_weight",
    "bm25_weight",
    "evidence_sentences",
    "temperature",
    "num_ctx",
    "collection",
    "data_dir",
    "index_dir",
)
_LLM_MODEL_KEY = {
    "ollama": "ollama_model",
    "openai": "openai_model",
    "llamacpp": "llamacpp_model_path",
}
_ANSWER_METRICS = (
    "fact_recall",
    "citation_validity",
    "citation_precision",
    "citation_support",
    "refusal_accuracy",
    "false_refusal_rate",
    "answer_language_match",
)
_DEFINITIONS = """\
- **hit@k**: a passage from an expected article is among the first k retrieved.
- **mrr**: 1/rank of the first passage from an expected article (0 when none).
- **recall@k**: fraction of the expected articles present in the first k (multi-article questions).
- **evidence@k**: an evidence phrase lies inside one of the first k passages.
- **evidence@Nchars**: an evidence phrase ends within the first N characters of the passages,
  read in rank order.
- **fact_recall**: fraction of expected facts stated in the answer (any listed alternative).
- **citation_validity**: fraction of `[n]` markers pointing at an existing citation.
- **citation_precision**: fraction of citations from an expected article.
- **citation_support**: fraction of citations whose quote is verbatim in the cited text.
- **refusal_accuracy**: unanswerable questions answered with "insufficient context".
- **false_refusal_rate**: answerable questions refused (lower is better).
- **answer_language_match**: the answer's declared language equals the question's.

Each metric is averaged over the questions it applies to: retrieval and answer-content metrics
over answerable questions, refusal accuracy over unanswerable ones, citation metrics over answers
that cite. Latencies are in milliseconds; a failed question counts as a miss."""


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "—"
    if name.endswith(("_p50", "_p95")):
        return f"{value:,.0f} ms"
    if name == "evidence_chars":
        return f"{value:.0f}"
    if name == "tokens_per_s":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def metrics_table(groups: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table, one column per group (overall, a language, a type), one row per metric."""
    groups = {name: g for name, g in groups.items() if g.get("n")}
    if not groups:
        return "_no questions_\n"
    names: list[str] = []
    for g in groups.values():
        names.extend(n for n in metric_names(g) if n not in names)
    lines = [
        "| metric | " + " | ".join(_cell(n) for n in groups) + " |",
        "|---|" + "---:|" * len(groups),
        "| questions | " + " | ".join(str(g["n"]) for g in groups.values()) + " |",
    ]
    if any(g.get("errors") for g in groups.values()):
        lines.append(
            "| errors | " + " | ".join(str(g.get("errors", 0)) for g in groups.values()) + " |"
        )
    for name in names:
        label = f"{name} ↓" if lower_is_better(name) else name
        lines.append(
            f"| {label} | " + " | ".join(_fmt(name, g.get(name)) for g in groups.values()) + " |"
        )
    return "\n".join(lines) + "\n"


def text_summary(summary: Mapping[str, Any]) -> str:
    """Aligned plain-text table for a terminal: overall, each language, and the baseline if run."""
    groups = {"overall": summary["overall"]}
    groups.update({k: g for k, g in summary.get("by_language", {}).items() if g.get("n")})
    columns = [(name, g) for name, g in groups.items()]
    base = summary.get("baseline")
    if base:
        columns.append(("baseline", base["overall"]))
    header = ["metric", *(name for name, _ in columns)] + (["ours/base"] if base else [])
    table = [
        header,
        ["questions", *(str(g.get("n", 0)) for _, g in columns)] + ([""] if base else []),
    ]
    for name in metric_names(summary["overall"]):
        row = [f"{name} ↓" if lower_is_better(name) else name]
        row += [_fmt(name, g.get(name)) for _, g in columns]
        if base:
            ratio = base["ratios"].get(name)
            row.append("—" if ratio is None else f"{ratio:.2f}×")
        table.append(row)
    if "judge" in summary:
        j = summary["judge"]
        table.append(["faithfulness (judge)", _fmt("faithfulness", j.get("faithfulness"))])
    widths = [max(len(r[i]) for r in table if i < len(r)) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        )
        for r in table
    ]
    return "\n".join(line.rstrip() for line in lines)


def baseline_table(summary: Mapping[str, Any]) -> str:
    ours, base = summary["overall"], summary["baseline"]["overall"]
    ratios = summary["baseline"]["ratios"]
    lines = ["| metric | ours | baseline | ours/baseline |", "|---|---:|---:|---:|"]
    for name in metric_names(ours):
        ratio = ratios.get(name)
        label = f"{name} ↓" if lower_is_better(name) else name
        lines.append(
            f"| {label} | {_fmt(name, ours.get(name))} | {_fmt(name, base.get(name))} | "
            + ("—" if ratio is None else f"{ratio:.2f}×")
            + " |"
        )
    return "\n".join(lines) + "\n"


def question_quality(row: Mapping[str, Any]) -> float | None:
    """One number per question for ranking the worst: the mean of its 'higher is better' scores."""
    if row.get("error"):
        return -1.0
    values = []
    for name, value in row["scores"].items():
        if value is None:
            continue
        if name.startswith(("hit@", "recall@", "evidence@")) or name in (
            "mrr",
            "fact_recall",
            "citation_precision",
            "citation_support",
            "refusal_accuracy",
        ):
            values.append(value)
        elif name == "false_refusal_rate":
            values.append(1.0 - value)
    return sum(values) / len(values) if values else None


def _quote_block(text: str, limit: int = 800) -> str:
    text = text.strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + " …"
    return "\n".join("> " + line for line in (text or "(empty)").splitlines())


def _worst_section(rows: Sequence[Mapping[str, Any]], worst: int) -> str:
    ranked = [(q, r) for r in rows if (q := question_quality(r)) is not None and q < 1.0]
    ranked.sort(key=lambda qr: qr[0])
    if not ranked:
        return "Every question scored perfectly.\n"
    parts = []
    for i, (quality, r) in enumerate(ranked[:worst], 1):
        expected = set(r.get("expected_sources") or [])
        scores = " · ".join(
            f"{n} {_fmt(n, v)}"
            for n, v in r["scores"].items()
            if v is not None and not n.endswith("_ms")
        )
        out = [
            f"### {i}. {r['id']} ({r['lang']}, {'/'.join(r.get('types', []))})"
            f" — score {quality:.2f}",
            "",
        ]
        out.append(f"**Question:** {r['question']}  ")
        out.append(f"**Expected sources:** {', '.join(sorted(expected)) or '— (unanswerable)'}  ")
        if r.get("evidence"):
            out.append("**Evidence:** " + "; ".join(f"“{e}”" for e in r["evidence"]) + "  ")
        if r.get("facts"):
            out.append("**Facts:** " + "; ".join(" / ".join(g) for g in r["facts"]) + "  ")
        out.append(f"**Scores:** {scores}")
        if r.get("error"):
            out += ["", f"**Error:** `{r['error']}`"]
        if r.get("answer") is not None:
            backend = r.get("backend") or {}
            out += [
                "",
                f"**Answer** ({backend.get('name', '?')}/{backend.get('model', '?')}, "
                f"insufficient_context={r.get('insufficient_context')}):",
                "",
                _quote_block(r["answer"] or ""),
            ]
            if r.get("citations"):
                out += ["", "**Cited passages:**", ""]
                for c in r["citations"]:
                    mark = "✓" if c.get("source") in expected else "✗"
                    lines = c.get("lines") or ["?", "?"]
                    quote = _cell(c.get("quote", ""))[:300]
                    out.append(
                        f"- [{c.get('n')}] {mark} `{c.get('source')}` "
                        f"lines {lines[0]}–{lines[1]}: “{quote}”"
                    )
        if r.get("retrieved"):
            out += ["", "**Retrieved:**", ""]
            for h in r["retrieved"]:
                mark = "✓" if h.get("source") in expected else "✗"
                lines = h.get("lines") or ["?", "?"]
                snippet = _cell(h.get("text", ""))[:160]
                out.append(
                    f"{h.get('rank')}. {mark} `{h.get('source')}` "
                    f"lines {lines[0]}–{lines[1]}: {snippet}"
                )
        parts.append("\n".join(out) + "\n")
    return "\n".join(parts)


def _settings_section(summary: Mapping[str, Any]) -> str:
    settings = summary.get("settings") or {}
    run = summary.get("run") or {}
    rows = [
        ("git commit", run.get("git_commit") or "unknown"),
        ("started (UTC)", run.get("started")),
        ("duration", f"{run.get('seconds', 0):.1f} s"),
        ("questions", run.get("questions")),
        ("k", run.get("k")),
        ("retrieval only", run.get("retrieval_only")),
        ("peak RSS", f"{run['peak_rss_mb']:.0f} MB" if run.get("peak_rss_mb") else "unknown"),
    ]
    if run.get("backends"):
        used = ", ".join(f"{name} ×{n}" for name, n in run["backends"].items())
        rows.append(("answered by", used))
    rows += [(key, settings[key]) for key in _REPORT_SETTINGS if key in settings]
    llm_key = _LLM_MODEL_KEY.get(str(settings.get("backend")))
    if llm_key and llm_key in settings:
        rows.append((llm_key, settings[llm_key]))
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
    return (
        "\n".join(lines)
        + "\n\nFull settings: `summary.json`; per-question records: `results.jsonl`.\n"
    )


def write_report(
    out_dir: str | Path,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    charts: Sequence[Path] = (),
    baseline_rows: Sequence[Mapping[str, Any]] | None = None,
    worst: int = 5,
) -> Path:
    """Write report.md: metric tables, baseline comparison, charts, worst questions, settings."""
    run = summary.get("run") or {}
    overall = summary["overall"]
    title = "Retrieval evaluation" if run.get("retrieval_only") else "Evaluation"
    parts = [
        f"# {title} report",
        "",
        f"{overall['n']} questions ({overall['n_answerable']} answerable, "
        f"{overall['n_unanswerable']} unanswerable), k={run.get('k', '?')}, "
        f"commit {run.get('git_commit') or 'unknown'}, {run.get('started', '')}.",
    ]
    if overall.get("errors"):
        parts.append(
            f"\n**{overall['errors']} question(s) failed with an error** (scored as misses)."
        )
    parts += [
        "",
        "## Metrics overall and per language",
        "",
        metrics_table({"overall": overall, **summary.get("by_language", {})}),
    ]
    parts += ["## By question type", "", metrics_table(summary.get("by_type", {}))]
    if "baseline" in summary:
        parts += ["## Compared with the baseline", "", baseline_table(summary)]
        parts += ["Ratios above 1 favour us, except for ↓ metrics (latency, false refusals).", ""]
        if baseline_rows is not None:
            parts += ["Baseline per-question records: `results_baseline.jsonl`.", ""]
    if "judge" in summary:
        j = summary["judge"]
        parts += [
            "## LLM judge (not part of the deterministic scores)",
            "",
            f"faithfulness {_fmt('faithfulness', j.get('faithfulness'))} "
            f"over {j.get('n', 0)} answers"
            + (f", {j['errors']} judge error(s)" if j.get("errors") else "")
            + ".",
            "",
        ]
    if charts:
        parts += ["## Charts", ""] + [f"![{p.stem}]({p.name})" for p in charts] + [""]
    parts += [f"## Worst {worst} questions", "", _worst_section(rows, worst)]
    parts += ["## Settings", "", _settings_section(summary)]
    parts += ["## Metric definitions", "", _DEFINITIONS, ""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------------


def _bar_chart(
    path: Path,
    title: str,
    groups: Mapping[str, Mapping[str, Any]],
    metrics: Sequence[str],
    count_key: str = "n",
) -> Path:
    # Figure + the Agg canvas directly: no pyplot global state, no GUI backend ever picked.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(groups)
    width = 0.8 / max(len(metrics), 1)
    n_bars = len(names) * len(metrics)
    fig = Figure(figsize=(min(18.0, max(6.0, 0.45 * n_bars + 2.5)), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, metric in enumerate(metrics):
        xs = [j + (i - (len(metrics) - 1) / 2) * width for j in range(len(names))]
        values = [groups[n].get(metric) for n in names]
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=metric)
        # Past ~30 bars the value labels overlap; the report's tables carry the numbers anyway.
        for bar, v in zip(bars, values if n_bars <= 30 else [], strict=False):
            label = "n/a" if v is None else f"{v:.2f}"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(
        range(len(names)),
        [f"{n}\n(n={groups[n][count_key]})" if count_key in groups[n] else n for n in names],
    )
    if max(len(n) for n in names) > 10:  # long metric names collide when set horizontally
        ax.tick_params(axis="x", labelrotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_ylim(0, 1.12)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _latency_chart(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = {}
    for name, label in (
        ("retrieve_ms", "retrieve"),
        ("first_token_ms", "first token"),
        ("total_ms", "total"),
    ):
        values = [r["scores"][name] for r in rows if r["scores"].get(name) is not None]
        if values:
            series[label] = values
    if not series:
        return None
    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.boxplot(
        list(series.values()),
        showfliers=False,
        tick_labels=[f"{k}\n(n={len(v)})" for k, v in series.items()],
    )
    # Every question as a dot too: with a few dozen questions the box alone hides the outliers.
    rng = random.Random(0)
    for i, values in enumerate(series.values(), 1):
        xs = [i + rng.uniform(-0.12, 0.12) for _ in values]
        ax.scatter(xs, values, s=10, alpha=0.5, color="tab:blue", zorder=3)
    ax.set_ylabel("ms")
    if max(max(v) for v in series.values()) > 50 * max(min(min(v) for v in series.values()), 1e-3):
        ax.set_yscale("log")  # retrieval and generation differ by orders of magnitude
    ax.set_title("Latency per question")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def write_charts(
    out_dir: str | Path,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    retrieval_only: bool = False,
) -> list[Path]:
    """retrieval.png, answers.png (unless retrieval_only), latency.png, baseline.png if compared."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("matplotlib is not installed: no charts (pip install matplotlib)")
        return []
    out = Path(out_dir)
    k = (summary.get("run") or {}).get("k", 5)
    groups = {"overall": summary["overall"], **summary.get("by_language", {})}
    charts = [
        _bar_chart(
            out / "retrieval.png",
            "Retrieval (answerable questions)",
            groups,
            ["hit@1", f"hit@{k}", "mrr"],
            "n_answerable",
        )
    ]
    if not retrieval_only:
        metrics = [m for m in _ANSWER_METRICS if summary["overall"].get("counts", {}).get(m)]
        charts.append(
            _bar_chart(out / "answers.png", "Answers", groups, metrics or list(_ANSWER_METRICS))
        )
    latency = _latency_chart(out / "latency.png", rows)
    if latency:
        charts.append(latency)
    if "baseline" in summary:
        ours, base = summary["overall"], summary["baseline"]["overall"]
        metrics = [
            m
            for m in metric_names(ours)
            if not lower_is_better(m) and m != "tokens_per_s" and ours.get(m) is not None
        ]
        by_metric = {m: {"ours": ours.get(m), "baseline": base.get(m)} for m in metrics}
        charts.append(
            _bar_chart(
                out / "baseline.png", "Ours vs baseline (overall)", by_metric, ["ours", "baseline"]
            )
        )
    return charts
