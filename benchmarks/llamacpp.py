"""Measure the `llamacpp` backend (the bundled Qwen2.5-Coder-1.5B-Instruct Q4_K_M) on real prompts.

Two jobs are measured on the same loaded model:

1. answer generation: real retrieval (hybrid retriever over seeds/), the product's evidence block
   and answer prompt, on a few questions of seeds/questions.jsonl (answerable + unanswerable);
   scored by fact recall, citation validity and refusal, against what extractive mode can quote;
2. machine translation of ONE evidence sentence into the question's language, scored by whether
   the key facts (names, numbers) survive.

Bounded on purpose (the machine is shared): 8 questions, 200 new tokens, 2 threads.

    python benchmarks/llamacpp.py                    # writes benchmarks/results/llamacpp.md
    python benchmarks/llamacpp.py --questions q02,q13 --max-tokens 64 --out /tmp/x.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.answering.prompts import answer_messages, phrase, render_evidence
from rag.llm.backends import LlamaCppChatModel
from rag.settings import Settings, load_settings
from rag.types import Evidence, Retrieved, Sentence

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "seeds" / "questions.jsonl"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "llamacpp.md"
# 6 answerable questions in all five languages + 2 unanswerable ones.
DEFAULT_QUESTIONS = ("q02", "q06", "q17", "q29", "q36", "q42", "q13", "q46")
# (question id, gold evidence phrase): translate the source sentence holding the phrase into the
# question's language.
TRANSLATIONS = (
    ("q02", "Почти 5 милиона артилерийски снаряда"),
    ("q03", "южнокорейският министър на отбраната Шин Уон-сик пред Bloomberg"),
    ("q06", "проектилот што го погоди украинскиот град Харков на 2 јануари"),
    ("q07", "Путін і Кім Чен Ин зустрілися на космодромі Восточний"),
    ("q08", "Ашота Мкртичева, який координував постачання зброї"),
    ("q17", "do 2019. godine vrate sve severnokorejske radnike"),
    ("q30", "Росія хоче закупити боєприпаси у КНДР в обмін на продовольство"),
    ("q36", "сега се извършва два или три пъти годишно"),
    ("q44", "ove godine ispalila više od 30 balističkih raketa"),
)
TRANSLATE_SYSTEM = (
    "You are a translator. Translate the user's text from {source} into {target}. "
    "Keep every name, number and date exactly. Output only the translation, nothing else."
)

log = logging.getLogger("bench.llamacpp")
_CITATION = re.compile(r"\[(\d+)\]")


# --------------------------------------------------------------------------------------------
# measuring


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    current = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def llama_perf(model: LlamaCppChatModel) -> dict[str, float]:
    """llama.cpp's own counters for the last call: prompt tokens actually evaluated (a prefix
    cached from the previous prompt is not re-evaluated) and generated tokens, with their times."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(model._llm._model._ctx.ctx)
    return {"n_p_eval": data.n_p_eval, "t_p_eval_ms": data.t_p_eval_ms,
            "n_eval": data.n_eval, "t_eval_ms": data.t_eval_ms}


def reset_perf(model: LlamaCppChatModel) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(model._llm._model._ctx.ctx)


def prompt_tokens(model: LlamaCppChatModel, messages: list[dict[str, str]]) -> int:
    """Tokens of the chat-templated prompt (what prefill must process without a cached prefix)."""
    llama = model._llm._model
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    text += "<|im_start|>assistant\n"  # the Qwen2.5 template, as in the GGUF's metadata
    return len(llama.tokenize(text.encode(), add_bos=False, special=True))


@dataclass
class Run:
    text: str = ""
    first_token_s: float | None = None
    total_s: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    perf: dict[str, float] = field(default_factory=dict)
    prompt_tokens: int = 0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    load_avg: float = 0.0  # 1-minute load average when the call ended (others share the CPU)
    cpu_share: float = 0.0  # CPU seconds used / (wall seconds x threads): 1.0 = had the cores
    error: str = ""


def generate(model: LlamaCppChatModel, messages: list[dict[str, str]], fresh: bool) -> Run:
    """Stream one reply, timing the first token and the whole reply. `fresh` drops llama.cpp's
    prompt cache first, so prefill is measured over the whole prompt."""
    run = Run(prompt_tokens=prompt_tokens(model, messages))
    if fresh:
        model._llm._model.reset()
    reset_perf(model)
    started = time.perf_counter()
    cpu_started = time.process_time()
    pieces: list[str] = []
    try:
        for piece in model.stream(messages):
            if run.first_token_s is None:
                run.first_token_s = time.perf_counter() - started
            pieces.append(piece)
    except Exception as e:  # recorded in the table, not fatal for the benchmark
        run.error = f"{type(e).__name__}: {e}"
    run.total_s = time.perf_counter() - started
    threads = model.settings.llamacpp_threads
    run.cpu_share = (time.process_time() - cpu_started) / (run.total_s * threads)
    run.text = "".join(pieces)
    run.usage = dict(model.last_usage)
    run.perf = llama_perf(model)
    run.rss_mb, run.peak_rss_mb = rss_mb()
    run.load_avg = os.getloadavg()[0]
    return run


def rates(run: Run) -> tuple[float | None, float | None]:
    """(prefill tok/s, generation tok/s) from llama.cpp's counters."""
    p = run.perf
    prefill = p["n_p_eval"] / (p["t_p_eval_ms"] / 1000) if p.get("t_p_eval_ms") else None
    gen = p["n_eval"] / (p["t_eval_ms"] / 1000) if p.get("t_eval_ms") else None
    return prefill, gen


# --------------------------------------------------------------------------------------------
# scoring


def fact_hits(text: str, facts: Sequence[Sequence[str]]) -> list[bool]:
    """One bool per fact group: is any of its alternatives in `text` (case-insensitive)?"""
    low = text.lower()
    return [any(alt.lower() in low for alt in group) for group in facts]


def citations_ok(text: str, n_evidence: int) -> tuple[bool, list[int]]:
    """(all markers point at an existing evidence number and there is at least one, markers)."""
    cited = [int(n) for n in _CITATION.findall(text)]
    return bool(cited) and all(1 <= n <= n_evidence for n in cited), cited


def refused(text: str, lang: str, settings: Settings) -> bool:
    """The model gave the refusal (in any corpus language) instead of an answer."""
    norm = " ".join(text.lower().split()).strip(" .")
    for code in ("en", "bg", "mk", "sr", "uk"):
        refusal = phrase("refusal", code, settings).lower().strip(" .")
        if refusal in norm:
            return True
    return False


# --------------------------------------------------------------------------------------------
# evidence


def chunk_evidence(retrieved: Sequence[Retrieved]) -> list[Evidence]:
    """Numbered evidence from whole retrieved chunks (used when rag.answering.evidence is not
    available)."""
    out = []
    for r in retrieved:
        c = r.chunk
        sentence = Sentence(source=c.source, chunk_id=c.id, text=c.text, start=c.start, end=c.end,
                            line_start=c.line_start, line_end=c.line_end, title=c.title,
                            language=c.language)
        out.append(Evidence(n=len(out) + 1, sentence=sentence, score=r.score))
    return out


def select_evidence(pipe: Any, question: str, retrieved: list[Retrieved],
                    kind: str) -> tuple[list[Evidence], str]:
    """The product's sentence-level evidence (rag.answering.evidence.EvidenceSelector, as every
    answer mode uses it) or, with kind="chunks" or without rag.answering.evidence, the whole
    retrieved chunks."""
    if kind == "sentences":
        try:
            from rag.answering.evidence import EvidenceSelector
        except ImportError:
            log.warning("rag.answering.evidence.EvidenceSelector not available; using whole chunks")
        else:
            global _selector
            if _selector is None:
                _selector = EvidenceSelector(pipe.embedder)
            selection = _selector.select(question, retrieved, k=EVIDENCE_K)
            return list(selection.evidence), (
                f"sentences chosen by rag.answering.evidence.EvidenceSelector (k={EVIDENCE_K}, "
                "with context sentences where needed)")
    return chunk_evidence(retrieved), "whole retrieved chunks"


_selector: Any = None
EVIDENCE_K = 6  # EvidenceSelector.select's default


def extractive_answer(pipe: Any, question: str) -> str | None:
    """What extractive mode shows for the question, when the product's answerer exists."""
    try:
        return pipe.ask(question, mode="extractive").answer
    except Exception as e:  # rag.answering.answer may not exist yet
        log.info("extractive answer unavailable: %s", e)
        return None


def source_sentence(source: Path, needle: str) -> str:
    """The sentence of `source` that contains `needle` (crude split; for the benchmark only)."""
    text = source.read_text(encoding="utf-8")
    i = text.find(needle)
    if i < 0:
        raise ValueError(f"{needle!r} not in {source}")
    start = max(text.rfind(sep, 0, i) for sep in (". ", "\n", "! ", "? ")) + 1
    ends = [j for j in (text.find(sep, i + len(needle)) for sep in (". ", "\n")) if j >= 0]
    end = min(ends) + 1 if ends else len(text)
    return text[start:end].strip()


# --------------------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def cell(text: str, limit: int = 220) -> str:
    one = " ".join(text.split()).replace("|", "\\|")
    return one if len(one) <= limit else one[: limit - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", default=",".join(DEFAULT_QUESTIONS))
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--num-ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--index-dir", type=Path, default=None,
                    help="default: a fresh index in a temporary directory")
    ap.add_argument("--evidence", choices=("sentences", "chunks"), default="sentences")
    ap.add_argument("--no-translation", action="store_true")
    ap.add_argument("--translations", default="", help="comma-separated question ids (default all)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    wanted = [q.strip() for q in args.questions.split(",") if q.strip()]
    qs = {d["id"]: d for d in map(json.loads, QUESTIONS.read_text().splitlines()) if d}
    tmp = tempfile.TemporaryDirectory(prefix="newsrag-bench-")
    index_dir = args.index_dir or Path(tmp.name) / "index"
    settings = load_settings(
        index_dir=index_dir, data_dir=ROOT / "seeds", mode="extractive", backend="llamacpp",
        num_ctx=args.num_ctx, llamacpp_threads=args.threads, max_answer_tokens=args.max_tokens,
    )

    from rag.pipeline import build_pipeline

    pipe = build_pipeline(settings)
    pipe.ensure_index()
    prepared = []
    evidence_kind = ""
    for qid in wanted:
        q = qs[qid]
        retrieved = pipe.retrieve(q["question"])
        evidence, evidence_kind = select_evidence(pipe, q["question"], retrieved, args.evidence)
        block = render_evidence(evidence)
        messages = answer_messages(block, q["question"], q["lang"], settings)
        prepared.append((q, evidence, block, messages, extractive_answer(pipe, q["question"])))
    rss_before, _ = rss_mb()

    model = LlamaCppChatModel(settings)
    t0 = time.perf_counter()
    model.check()  # assembles the GGUF on first use, then loads it
    load_s = time.perf_counter() - t0
    rss_loaded, _ = rss_mb()
    log.info("model %s loaded in %.1f s", model.path, load_s)

    rows = []
    for q, evidence, block, messages, extractive in prepared:
        log.info("%s: %d evidence, generating", q["id"], len(evidence))
        run = generate(model, messages, fresh=True)
        facts = q["facts"]
        hits = fact_hits(run.text, facts)
        ev_hits = fact_hits(block, facts)
        if extractive is None:  # proxy: what extractive mode quotes, the top few sentences
            top = evidence[: settings.evidence_sentences]
            extractive = " ".join(e.sentence.text for e in top)
        ex_hits = fact_hits(extractive, facts)
        cites_valid, cited = citations_ok(run.text, len(evidence))
        rows.append({
            "q": q, "run": run, "n_evidence": len(evidence), "hits": hits, "ev_hits": ev_hits,
            "ex_hits": ex_hits, "cites_valid": cites_valid, "cited": cited,
            "refused": refused(run.text, q["lang"], settings),
        })
        log.info("%s: %.1f s, %r", q["id"], run.total_s, run.text[:120])

    # the last prompt again, its prefix still in llama.cpp's cache: a regenerated answer
    cache_run = generate(model, prepared[-1][3], fresh=False) if prepared else None

    translations = []
    if not args.no_translation:
        from rag.lang.detect import detect

        for qid, needle in TRANSLATIONS:
            if args.translations and qid not in args.translations.split(","):
                continue
            q = qs[qid]
            src_file = ROOT / "seeds" / q["sources"][0]
            sentence = source_sentence(src_file, needle)
            src_lang, _ = detect(sentence)
            messages = [
                {"role": "system", "content": TRANSLATE_SYSTEM.format(
                    source=phrase("language_name", src_lang, settings),
                    target=phrase("language_name", q["lang"], settings))},
                {"role": "user", "content": sentence},
            ]
            run = generate(model, messages, fresh=True)
            # only the fact groups the sentence actually states can survive translation
            stated = [g for g, hit in zip(q["facts"], fact_hits(sentence, q["facts"]), strict=True)
                      if hit]
            kept = fact_hits(run.text, stated)
            out_lang, _ = detect(run.text) if run.text.strip() else ("", "")
            translations.append({"q": q, "src_lang": src_lang, "sentence": sentence, "run": run,
                                 "stated": stated, "kept": kept, "out_lang": out_lang})
            log.info("translate %s %s->%s: %.1f s %r", qid, src_lang, q["lang"], run.total_s,
                     run.text[:100])

    report = render_report(args, settings, model, evidence_kind, load_s, rss_before, rss_loaded,
                           rows, cache_run, translations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    log.info("wrote %s", args.out)
    tmp.cleanup()
    return 0


def render_report(args: argparse.Namespace, settings: Settings, model: LlamaCppChatModel,
                  evidence_kind: str, load_s: float, rss_before: float, rss_loaded: float,
                  rows: list[dict[str, Any]], cache_run: Run | None,
                  translations: list[dict[str, Any]]) -> str:
    import llama_cpp

    _, peak = rss_mb()
    out = [
        "# llamacpp backend: Qwen2.5-Coder-1.5B-Instruct Q4_K_M, measured",
        "",
        f"Generated by `python benchmarks/llamacpp.py` on {time.strftime('%Y-%m-%d %H:%M')} — "
        f"{platform.processor() or platform.machine()}, {args.threads} threads, "
        f"llama-cpp-python {llama_cpp.__version__}, n_ctx {settings.num_ctx}, "
        f"max_tokens {settings.max_answer_tokens}, temperature {settings.temperature}. "
        f"Model `{model.path.name if model.path else '?'}`; evidence: {evidence_kind}, "
        f"top_k {settings.top_k}.",
        "",
        f"Load: {load_s:.1f} s. RSS before loading {rss_before:.0f} MB (embedder, Chroma), after "
        f"{rss_loaded:.0f} MB; peak over the whole run {peak:.0f} MB. The machine has "
        f"{os.cpu_count()} cores shared with other jobs: `load` is the 1-minute load average when "
        "each call ended; above ~2, llama.cpp's 2 threads compete for the cores and every rate "
        "drops. `cpu share` = CPU seconds this process got / (wall seconds x threads); well below "
        "1 means the timings are for a contended machine, not the model.",
        "",
        "## Answer generation",
        "",
        "Facts = fact groups of seeds/questions.jsonl found in the answer (any alternative, "
        "case-insensitive). Evidence = the same, in the evidence block the model was given "
        "(the most extractive mode could quote). Extractive = in the product's extractive answer "
        "when rag.answering.answer exists, else in the top evidence_sentences "
        f"({settings.evidence_sentences}) evidence sentences, which is what extractive mode "
        "quotes. Prefill/gen tok/s from llama.cpp's own counters; the prompt "
        "cache was dropped before each question.",
        "",
        "| q | lang | answerable | prompt tok | facts LLM | facts evidence | facts extractive "
        "| citations | refused | correct | prefill tok/s | gen tok/s | gen tok | first token s "
        "| total s | RSS MB | load | cpu share |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sums = {"facts": 0, "facts_total": 0, "ev": 0, "ex": 0, "ex_n": 0, "correct": 0,
            "cites": 0, "answerable": 0, "first": [], "total": [], "prefill": [], "gen": []}
    for r in rows:
        q, run = r["q"], r["run"]
        prefill, gen = rates(run)
        n_facts = len(q["facts"])
        if q["answerable"]:
            correct = sum(r["hits"]) == n_facts and r["cites_valid"] and not r["refused"]
            sums["answerable"] += 1
            sums["facts"] += sum(r["hits"])
            sums["facts_total"] += n_facts
            sums["ev"] += sum(r["ev_hits"])
            sums["cites"] += int(r["cites_valid"])
            if r["ex_hits"] is not None:
                sums["ex"] += sum(r["ex_hits"])
                sums["ex_n"] += n_facts
        else:
            correct = r["refused"]
        sums["correct"] += int(correct)
        for key, value in (("first", run.first_token_s), ("total", run.total_s),
                           ("prefill", prefill), ("gen", gen)):
            if value is not None:
                sums[key].append(value)
        ex = "–" if r["ex_hits"] is None else f"{sum(r['ex_hits'])}/{n_facts}"
        cites = "valid" if r["cites_valid"] else ("none" if not r["cited"] else
                                                   f"invalid {r['cited']}")
        out.append(
            f"| {q['id']} | {q['lang']} | {'yes' if q['answerable'] else 'no'} "
            f"| {run.prompt_tokens} | {sum(r['hits'])}/{n_facts} | {sum(r['ev_hits'])}/{n_facts} "
            f"| {ex} | {cites} | {'yes' if r['refused'] else 'no'} | {'✔' if correct else '✘'} "
            f"| {fmt(prefill)} | {fmt(gen)} | {int(run.perf.get('n_eval', 0))} "
            f"| {fmt(run.first_token_s)} | {fmt(run.total_s)} | {run.peak_rss_mb:.0f} "
            f"| {run.load_avg:.1f} | {run.cpu_share:.2f} |"
        )

    def mean(xs: list[float]) -> str:
        return fmt(sum(xs) / len(xs)) if xs else "–"

    n_ans = sums["answerable"]
    ex_line = (f"{sums['ex']}/{sums['ex_n']}" if sums["ex_n"]
               else "not measured (no rag.answering.answer)")
    out += [
        "",
        f"**Summary:** {sums['correct']}/{len(rows)} correct (answerable: all facts + valid "
        f"citations + no refusal; unanswerable: refused). Fact recall LLM "
        f"{sums['facts']}/{sums['facts_total']}, in the evidence {sums['ev']}/{sums['facts_total']}"
        f", extractive answer {ex_line}. Valid citations on {sums['cites']}/{n_ans} answerable. "
        f"Mean first token {mean(sums['first'])} s, mean total {mean(sums['total'])} s, "
        f"mean prefill {mean(sums['prefill'])} tok/s, mean generation {mean(sums['gen'])} tok/s.",
        "",
    ]
    if cache_run is not None:
        prefill, gen = rates(cache_run)
        out += [
            f"The last prompt ({rows[-1]['q']['id']}) again with llama.cpp's prompt cache kept "
            f"(a regenerated answer): {int(cache_run.perf['n_p_eval'])} of "
            f"{cache_run.prompt_tokens} prompt tokens evaluated, first token "
            f"{fmt(cache_run.first_token_s)} s, total {fmt(cache_run.total_s)} s. A new question "
            "shares only the start of the system prompt (its language-specific rule comes early), "
            "so its prefill is the whole prompt, as in the table.",
            "",
        ]
    out += ["### Answers", ""]
    for r in rows:
        run = r["run"]
        err = f" **error:** {run.error}" if run.error else ""
        out.append(f"- **{r['q']['id']}** {cell(r['q']['question'], 160)} → "
                   f"{cell(run.text, 2000)}{err}")
    if translations:
        out += [
            "",
            "## Translating one evidence sentence into the question's language",
            "",
            "Kept = fact groups stated in the source sentence that are still in the translation "
            "(any alternative of the group, case-insensitive; names must come out in a spelling "
            "listed in questions.jsonl). Out lang = lingua's guess for the output.",
            "",
            "| q | from → to | kept | out lang | gen tok | first token s | total s | load "
            "| cpu share | source | translation |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        kept = stated = 0
        times = []
        for t in translations:
            run = t["run"]
            kept += sum(t["kept"])
            stated += len(t["stated"])
            times.append(run.total_s)
            out.append(
                f"| {t['q']['id']} | {t['src_lang']} → {t['q']['lang']} "
                f"| {sum(t['kept'])}/{len(t['stated'])} | {t['out_lang']} "
                f"| {int(run.perf.get('n_eval', 0))} | {fmt(run.first_token_s)} "
                f"| {fmt(run.total_s)} | {run.load_avg:.1f} | {run.cpu_share:.2f} "
                f"| {cell(t['sentence'], 2000)} | {cell(run.text, 2000)} |"
            )
        right_lang = sum(t["out_lang"] == t["q"]["lang"] for t in translations)
        out += [
            "",
            f"**Summary:** facts kept {kept}/{stated}; output in the target language "
            f"{right_lang}/{len(translations)}; mean {sum(times) / len(times):.1f} s per sentence.",
        ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
