"""`rag` command line: index, retrieve, ask, eval, serve, mcp. The only place in rag/ that
prints."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from rag.settings import Settings, cache_dir, corpus_index_dir, load_settings
from rag.types import RagError


def _progress_bar(desc: str):
    """An indexing progress callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    state: dict = {}

    def update(done: int, total: int, current: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="file", file=sys.stderr,
                                      leave=False, disable=total == 0)
        bar.set_postfix_str(current[:40])
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _settings(args: argparse.Namespace, **extra) -> Settings:
    flags = {
        "index_dir": getattr(args, "index_dir", None),
        "top_k": getattr(args, "k", None),
        "mode": getattr(args, "mode", None),
        "backend": getattr(args, "backend", None),
    }
    return load_settings(**{**extra, **{k: v for k, v in flags.items() if v is not None}})


def _yield_cpu(settings: Settings) -> None:
    """Batch indexing gives way to answering (settings.index_nice). Called before any model
    loads: the embedder's worker threads inherit the priority of the thread that starts them."""
    if settings.index_nice > 0:
        try:
            os.nice(settings.index_nice)
        except OSError as e:  # not permitted / not supported: index at normal priority
            logging.getLogger(__name__).info("could not lower the CPU priority: %s", e)


def _pipeline(settings: Settings, args: argparse.Namespace, *, need_llm: bool = False):
    from rag.pipeline import build_pipeline

    model = getattr(args, "model", None)
    if not need_llm:
        settings = settings.model_copy(update={"mode": "extractive"})
    return build_pipeline(settings, backend=getattr(args, "backend", None), model=model)


def _read_questions(path: Path) -> list[dict]:
    from rag.eval.evaluate import load_questions

    return [q.__dict__ if hasattr(q, "__dict__") else dict(q) for q in load_questions(path)]


def cmd_index(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _yield_cpu(settings)
    pipe = _pipeline(settings, args)
    path = Path(args.path or settings.data_dir)
    report = pipe.index(path, rebuild=args.rebuild, progress=_progress_bar("indexing"))
    for file, reason in report.skipped:
        print(f"skipped {file}: {reason}", file=sys.stderr)
    print(
        f"{report.files} files: {report.indexed} indexed, {report.unchanged} unchanged, "
        f"{len(report.skipped)} skipped, {report.removed} removed; {report.chunks} chunks written, "
        f"{report.total_chunks} in the index; {report.seconds:.1f} s"
    )
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """Add articles the way the app's upload does (Pipeline.add_document): each is checked,
    indexed, and only then saved into the uploads folder beside the index."""
    settings = _settings(args)
    _yield_cpu(settings)
    pipe = _pipeline(settings, args)
    failed = 0
    for name in args.files:
        f = Path(name)
        try:
            data = f.read_bytes()
        except OSError as e:
            print(f"{f}: cannot be read ({e.strerror or e})", file=sys.stderr)
            failed += 1
            continue
        result = pipe.add_document(f.name, data)
        print(result.message, file=sys.stdout if result.ok else sys.stderr)
        failed += not result.ok
    return 1 if failed else 0


def _emit_retrieval(rid, question: str, hits, ms: float, as_json: bool) -> None:
    if as_json:
        row = {"question": question, "retrieved": [h.to_json() for h in hits],
               "retrieve_ms": round(ms, 2)}
        if rid is not None:
            row = {"id": rid, **row}
        print(json.dumps(row, ensure_ascii=False), flush=True)
        return
    print(f"Q: {question}  ({ms:.0f} ms)")
    for h in hits:
        c = h.chunk
        text = " ".join(c.text.split())
        print(f"  {h.rank}. [{h.score:.4f}] {c.source} lines {c.line_start}-{c.line_end} "
              f"({c.language}) {text[:160]}{'…' if len(text) > 160 else ''}")


def _questions(args: argparse.Namespace) -> Iterable[tuple[str | None, str]]:
    if args.questions:
        for q in _read_questions(Path(args.questions)):
            yield q["id"], q["question"]
    elif args.question:
        yield None, args.question
    else:
        raise RagError("Give a question, or --questions FILE (a question-set .jsonl).")


def cmd_retrieve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pipe = _pipeline(settings, args)
    for rid, question in _questions(args):
        t0 = time.perf_counter()
        hits = pipe.retrieve(question, args.k)
        _emit_retrieval(rid, question, hits, (time.perf_counter() - t0) * 1000, args.json)
    return 0


def _warm_for(pipe, settings, questions: int) -> None:
    """Before a question set: embed the evidence sentences of every stored passage up front
    (as the app does at start-up) when that is less work than embedding them question by
    question, i.e. when the index holds fewer passages than the questions will look at
    (vectors already in the sentence cache cost nothing either way)."""
    from rag.answering.answer import RETRIEVE_FACTOR

    looked_at = questions * settings.top_k * RETRIEVE_FACTOR
    passages = pipe.store.count()
    if passages <= looked_at:
        pipe.warm(sentences=True, background=False)
    else:
        logging.getLogger(__name__).info(
            "%d passages, %d questions: evidence sentences are embedded as questions need "
            "them", passages, questions)
        pipe.warm(sentences=False)


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _settings(args)
    pipe = _pipeline(settings, args, need_llm=settings.mode != "extractive")
    questions = list(_questions(args))  # a bad question file fails before any answer
    if args.questions:
        _warm_for(pipe, settings, len(questions))
    for rid, question in questions:
        if args.json:
            answer = pipe.ask(question, mode=args.mode)
            row = answer.to_json()
            if rid is not None:
                row = {"id": rid, **row}
            print(json.dumps(row, ensure_ascii=False), flush=True)
            continue
        answer = None
        for kind, payload in pipe.stream(question, mode=args.mode):
            if kind == "delta":
                print(payload, end="", flush=True)
            elif kind == "reset":  # generation failed mid-answer: the fallback follows
                print("\n---", flush=True)
            elif kind == "answer":
                answer = payload
        print()
        if answer is not None:
            _print_sources(answer)
    return 0


def _print_sources(answer) -> None:
    for c in answer.citations:
        quote = " ".join(c.quote.split())
        print(f"  [{c.n}] {c.source} lines {c.lines[0]}-{c.lines[1]}: {quote[:200]}")
    for note in answer.notes:
        print(f"  note: {note}")
    t = answer.timings
    first = f", first token {t.first_token_ms:.0f} ms" if t.first_token_ms is not None else ""
    backend = ":".join(x for x in (answer.backend.name, answer.backend.model) if x)
    print(f"  ({answer.mode}, {backend}; retrieval "
          f"{t.retrieve_ms:.0f} ms{first}, total {t.total_ms:.0f} ms)")


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.eval import evaluate

    mins = evaluate.parse_min(args.min or [])
    corpus = Path(args.corpus).resolve() if args.corpus else None
    if corpus is not None and not corpus.is_dir():
        raise RagError(f"--corpus {args.corpus}: no such folder (give a folder of articles).")
    questions = evaluate.load_questions(Path(args.questions), data_dir=corpus)
    extra: dict = {}
    if corpus is not None:
        # Each corpus gets its own index (kept between runs, updated incrementally) and vectors
        # come from the shared embedding cache, so evaluating a folder again costs no encoding.
        extra = {"data_dir": corpus, "embed_cache": load_settings().embed_cache
                 or cache_dir() / "embeddings.sqlite"}
        if args.index_dir is None:
            extra["index_dir"] = corpus_index_dir(corpus)
    settings = _settings(args, **extra)
    pipe = _pipeline(settings, args, need_llm=not args.retrieval_only and
                     settings.mode != "extractive")
    if corpus is not None:
        report = pipe.index(corpus, progress=_progress_bar("indexing"))
        print(f"index {settings.index_dir}: {report.indexed} indexed, {report.unchanged} "
              f"unchanged, {report.removed} removed, {report.total_chunks} passages",
              file=sys.stderr)
    else:
        pipe.ensure_index(progress=_progress_bar("indexing"))
    baseline = None
    if args.baseline:
        from rag.eval.baseline import NaivePipeline

        baseline = NaivePipeline(settings, pipe.embedder, chat_model=pipe.chat_model,
                                 data_dir=settings.data_dir)
    out = Path(args.out or Path("eval-runs") / time.strftime("%Y%m%d-%H%M%S"))
    summary = evaluate.run_eval(
        pipe, questions, out, k=args.k or settings.top_k, retrieval_only=args.retrieval_only,
        baseline=baseline, progress=True, settings_dict=_public_settings(settings),
    )
    print(evaluate.format_summary(summary) if hasattr(evaluate, "format_summary")
          else json.dumps(summary["overall"], indent=2, ensure_ascii=False))
    print(f"\nwrote {out}/ (results.jsonl, summary.json, report.md, charts)")
    failures = evaluate.check_thresholds(summary, mins)
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


def _ready_pipeline(args: argparse.Namespace, **extra):
    """A pipeline for a long-running server: the index built if missing, models warmed."""
    settings = _settings(args, **extra)
    pipe = _pipeline(settings, args, need_llm=settings.mode != "extractive")
    pipe.ensure_index(progress=_progress_bar("indexing"))
    pipe.warm()
    return settings, pipe


def _address(args: argparse.Namespace, port_setting: str) -> tuple[str, int]:
    """The address a server will bind, known before the minutes of indexing that precede it."""
    settings = _settings(args)
    port = args.port if args.port is not None else getattr(settings, port_setting)
    return args.host or settings.host, port


def cmd_serve(args: argparse.Namespace) -> int:
    from rag.api.http import serve
    from rag.app.net import check_port_free

    check_port_free(*_address(args, "port"))
    settings, pipe = _ready_pipeline(args, host=args.host, port=args.port)
    print(f"OpenAI-compatible API at http://{settings.host}:{settings.port}/v1 "
          f"(models newsrag, newsrag-generate, newsrag-extractive); Ctrl+C stops it",
          file=sys.stderr)
    serve(pipe, settings)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    try:
        from rag.api import mcp_server
    except ImportError as e:
        raise RagError(f"The MCP server needs the mcp package ({e}): pip install -e '.[mcp]'") \
            from e

    if args.http:
        from rag.app.net import check_port_free

        host, port = _address(args, "mcp_port")
        check_port_free(host, port)
    settings, pipe = _ready_pipeline(args)
    server = mcp_server.build_mcp(pipe, settings)
    if args.http:
        print(f"MCP server (streamable HTTP) at http://{host}:{port}/mcp; Ctrl+C stops it",
              file=sys.stderr)
        mcp_server.run_http(server, settings, host, port)
    else:
        mcp_server.run_stdio(server)  # stdout belongs to the protocol from here on
    return 0


def _public_settings(settings: Settings) -> dict:
    d = settings.model_dump(mode="json")
    for secret in ("openai_api_key", "auth_password"):
        d.pop(secret, None)
    return d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rag", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logs")
    p.add_argument("--index-dir", type=Path, help="Chroma index folder (default: index/)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("index", help="index articles (.txt/.md), incrementally")
    s.add_argument("path", nargs="?", help="file or folder (default: settings.data_dir, seeds/)")
    s.add_argument("--rebuild", action="store_true",
                   help="build a new index aside (from PATH and the uploads), then switch to it")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("add", help="add articles as the app's upload does (kept in uploads/)")
    s.add_argument("files", nargs="+", help=".txt/.md files")
    s.set_defaults(func=cmd_add)

    for name, func, helptext in (("retrieve", cmd_retrieve, "show the passages for a question"),
                                 ("ask", cmd_ask, "answer a question with citations")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("question", nargs="?")
        s.add_argument("-k", type=int, help="passages to retrieve (default 5)")
        s.add_argument("--json", action="store_true", help="one JSON object per question")
        s.add_argument("--questions", help="answer every question of a question-set .jsonl")
        if name == "ask":
            s.add_argument("--mode", choices=["auto", "generate", "extractive"])
            s.add_argument("--backend", choices=["ollama", "openai", "llamacpp"])
            s.add_argument("--model", help="LLM model name (or GGUF path for llamacpp)")
        s.set_defaults(func=func)

    s = sub.add_parser("eval", help="evaluate on a question set; writes a report and charts")
    s.add_argument("--questions", default="seeds/questions.jsonl")
    s.add_argument("--corpus", help="a folder of articles the questions are about; it gets its "
                   "own index (default: the settings' index over data_dir)")
    s.add_argument("--out", help="output folder (default eval-runs/<timestamp>/)")
    s.add_argument("--retrieval-only", action="store_true")
    s.add_argument("--mode", choices=["auto", "generate", "extractive"])
    s.add_argument("--backend", choices=["ollama", "openai", "llamacpp"])
    s.add_argument("--model")
    s.add_argument("-k", "--k", type=int, dest="k")
    s.add_argument("--baseline", action="store_true",
                   help="also run a naive llama-index pipeline and show ratios")
    s.add_argument("--min", action="append", metavar="METRIC=VALUE",
                   help="fail (exit 1) when a metric is below VALUE, e.g. --min hit@5=1.0")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("serve", help="serve the OpenAI-compatible API (/v1) without the chat")
    s.add_argument("--host", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 7860)")
    s.add_argument("--mode", choices=["auto", "generate", "extractive"],
                   help="default answer mode (each request picks one through its model)")
    s.add_argument("--backend", choices=["ollama", "openai", "llamacpp"])
    s.add_argument("--model", help="LLM model name (or GGUF path for llamacpp)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("mcp", help="run the MCP server (stdio; --http for streamable HTTP)")
    s.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp")
    s.add_argument("--host", help="address to bind with --http (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port with --http (default 7861)")
    s.add_argument("--mode", choices=["auto", "generate", "extractive"])
    s.add_argument("--backend", choices=["ollama", "openai", "llamacpp"])
    s.add_argument("--model", help="LLM model name (or GGUF path for llamacpp)")
    s.set_defaults(func=cmd_mcp)
    return p


def configure_logging(level: int, fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    logging.basicConfig(level=level, format=fmt)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging([logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)])
    try:
        return args.func(args)
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
