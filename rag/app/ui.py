"""The Gradio chat: streamed answers, clickable citation chips, a Sources panel and a viewer.

The UI only calls the pipeline (stream / ask / document / documents / index); all markup comes
from `rag.app.ui_render`, whose functions escape every piece of article and user text.

How a chip opens a source: answer chips and the panel's links are `<a href="#cite-T-N">` (T = the
answer's turn in this chat, N = the citation number; `#chunk-T-R` for an uncited retrieved
passage of rank R). A page script catches clicks on such links, writes the reference into a
hidden textbox and clicks a hidden button; that event looks the reference up in this session's
answers and fetches the article with `pipeline.document(source)`, which only knows indexed
documents. No file path ever comes from the browser.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from rag.app import ui_render as R
from rag.app.net import check_port_free
from rag.indexing.indexer import RateMeter
from rag.indexing.ingest import EXTENSIONS
from rag.pipeline import PipelineProtocol, safe_name, size_label
from rag.settings import Settings
from rag.types import Answer, RagError

logger = logging.getLogger(__name__)



def load_examples(path: Path | None) -> list[str]:
    """The example questions of `settings.examples_file`: they are about one corpus (the seeds'
    ship in examples.json), so they are data beside it, not part of the chat. A missing or
    malformed file only costs the examples (with a warning saying which file and why)."""
    if path is None or not Path(path).exists():
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        questions = data["questions"]
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ValueError('"questions" must be a list of strings')
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("example questions not shown: %s is not {\"questions\": [...]} (%s)",
                       path, e)
        return []
    return [q.strip() for q in questions if q.strip()]

MODES = ["auto", "generate", "extractive"]
VIEWER_HINT = "Article viewer: click a [n] chip, or pick an article above, to read it here."
_REF = re.compile(r"(cite|chunk)-(\d{1,4})-(\d{1,4})")
# Streaming re-sends the whole chat to the browser; ~12 updates a second reads as smooth.
_STREAM_INTERVAL = 0.08

CSS = """
.cite-chip { display: inline-block; padding: 0 .38em; margin: 0 .08em; border-radius: .7em;
  background: var(--color-accent-soft); color: var(--color-accent) !important;
  font-size: .82em; font-weight: 700; line-height: 1.5; text-decoration: none !important;
  cursor: pointer; vertical-align: baseline; }
.cite-chip:hover, .cite-chip:focus { background: var(--color-accent); color: white !important; }
.lang-tag { display: inline-block; font-size: .7em; font-weight: 700; padding: 0 .4em;
  border-radius: .3em; background: var(--neutral-200); color: var(--neutral-800);
  vertical-align: middle; letter-spacing: .03em; }
.answer-status { font-size: .78em; color: var(--body-text-color-subdued); margin-top: .5em; }
.answer-note { font-size: .86em; border-left: 3px solid #f59e0b; padding: .25em .6em;
  margin-top: .5em; background: rgba(245, 158, 11, .12); }
.answer-error { border-left: 3px solid #dc2626; padding: .25em .6em;
  background: rgba(220, 38, 38, .1); }
.refusal { font-style: italic; }
.refusal-why { font-size: .85em; color: var(--body-text-color-subdued); }
.typing { opacity: .6; }
#side { position: sticky; top: .5em; align-self: flex-start; }
#sources .sources { max-height: 30vh; overflow: auto; padding-right: .3em; }
.sources-h { font-weight: 700; font-size: 1.05em; margin-bottom: .2em; }
.sources-q { font-size: .85em; color: var(--body-text-color-subdued); margin-bottom: .3em; }
.src-card { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: .45em .7em; margin: .45em 0; }
.src-card.active { border-color: var(--color-accent);
  box-shadow: 0 0 0 2px var(--color-accent-soft); }
.src-card.other { opacity: .9; }
.src-head { font-size: .85em; display: flex; gap: .45em; align-items: center;
  flex-wrap: wrap; }
.src-file { font-family: var(--font-mono); font-size: .92em; }
.src-lines, .score, .rank { color: var(--body-text-color-subdued); }
.src-title { font-weight: 600; margin: .2em 0; }
.src-card .src-passage { white-space: pre-line; margin: .3em 0 !important; padding: 0 0 0 .6em;
  border-left: 3px solid var(--border-color-primary); font-size: .92em; font-style: normal; }
.src-card .src-passage::before, .src-card .src-passage::after { content: none; }
.src-passage.plain { font-size: .85em; }
.open-src { display: inline-block; font-size: .82em; margin-top: .1em; }
details.src-other summary { cursor: pointer; font-size: .9em; margin-top: .4em; }
.no-sources { font-style: italic; margin: .4em 0; }
mark { background: #fde047; color: #111; padding: 0 .1em; border-radius: 2px; }
.viewer-head { border-bottom: 1px solid var(--border-color-primary); padding-bottom: .3em; }
.viewer-title { font-weight: 700; }
.viewer-meta { font-size: .8em; color: var(--body-text-color-subdued); }
.viewer-label { color: var(--color-accent); font-weight: 600; }
.viewer-body { max-height: 44vh; overflow: auto; position: relative; padding-right: .4em; }
.viewer-body p { margin: .35em 0; }
.viewer-body .ln { display: inline-block; min-width: 2.2em; color: var(--body-text-color-subdued);
  font-size: .72em; user-select: none; }
.viewer.empty, .sources.empty { color: var(--body-text-color-subdued); font-size: .9em; }
#upload-status .ok { color: #15803d; } #upload-status .err { color: #b91c1c; }
"""

# Installed once per page: turns clicks on citation links into the hidden "open" event.
HEAD = """
<script>
(() => {
  if (window.__ragCitations) return;
  window.__ragCitations = true;
  function openRef(ref) {
    const box = document.querySelector('#ref-box textarea, #ref-box input');
    const btn = document.querySelector('#ref-open');
    if (!box || !btn) return;
    box.value = ref;
    box.dispatchEvent(new Event('input', { bubbles: true }));
    btn.click();
  }
  // Capture phase: run before the Chatbot's own link handling (which would open a new tab).
  document.addEventListener('click', (ev) => {
    const a = ev.target instanceof Element &&
      ev.target.closest('a[href^="#cite-"], a[href^="#chunk-"]');
    if (!a) return;
    ev.preventDefault();
    ev.stopPropagation();
    openRef(a.getAttribute('href').slice(1));
  }, true);
})();
</script>
"""

# Runs after the viewer is filled: scroll the highlighted span into view inside the viewer.
SCROLL_JS = """
() => {
  setTimeout(() => {
    const card = document.querySelector('#sources .src-card.active');
    if (card) card.scrollIntoView({ block: 'nearest' });
    const body = document.querySelector('#viewer .viewer-body');
    const mark = document.querySelector('#viewer-mark');
    if (body && mark) {
      body.scrollTop = Math.max(0, mark.offsetTop - body.clientHeight / 3);
      mark.scrollIntoView({ block: 'nearest' });
    }
  }, 80);
}
"""


@dataclass(frozen=True)
class Session:
    """One browser tab's chat: what is shown, what the pipeline sees, and the answers (whose
    citations the chips refer to by turn)."""

    display: tuple[dict, ...] = ()
    history: tuple[dict, ...] = ()
    answers: tuple[Answer, ...] = ()


@dataclass
class UploadResult:
    ok: bool
    message: str
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def upload_dir_for(settings: Settings) -> Path:
    """Uploaded articles live beside the index, never in the seed folder (settings.data_dir)."""
    return Path(settings.index_dir) / "uploads"


_safe_name = safe_name  # the name the UI tests know


class ChatUI:
    """The event handlers; each only talks to the pipeline and the render functions."""

    def __init__(self, pipeline: PipelineProtocol, settings: Settings,
                 upload_dir: Path | None = None):
        self.pipeline = pipeline
        self.settings = settings
        self.upload_dir = Path(upload_dir) if upload_dir else upload_dir_for(settings)
        self._upload_lock = threading.Lock()

    # --- documents -----------------------------------------------------------------------------
    def doc(self, source: str) -> R.DocText | None:
        """The indexed article, or None when it is not in the index. An unreachable store
        raises RagError: that is an outage to report, not a missing article."""
        try:
            return self.pipeline.document(source)
        except RagError:
            raise
        except Exception:  # noqa: BLE001 - a broken document must not break an answer's render
            logger.exception("could not fetch %s from the index", source)
            return None

    def _doc_for_render(self, source: str) -> R.DocText | None:
        # The Sources panel only decorates with the article's title: no store, no title.
        try:
            return self.doc(source)
        except RagError:
            return None

    def _doc_or_message(self, source: str) -> R.DocText | str:
        try:
            return self.doc(source)
        except RagError as e:
            logger.warning("could not open %s: %s", source, e)
            return str(e)

    def doc_choices(self) -> list[tuple[str, str]]:
        try:
            docs = self.pipeline.documents()
        except Exception:  # noqa: BLE001
            logger.exception("could not list the indexed documents")
            return []
        return [
            (f"{(info.title or source)[:70]} — {source} ({R.lang_label(info.language)})", source)
            for source, info in sorted(docs.items())
        ]

    # --- chat ----------------------------------------------------------------------------------
    def respond(self, question: str | None, session: Session | None,
                mode: str | None = None) -> Iterator[tuple[Any, Any, Any, Any]]:
        """Stream one answer: yields (chat messages, question box, sources html, session)."""
        session = session or Session()
        q = (question or "").strip()
        if not q:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        shown = list(session.display) + [
            {"role": "user", "content": R.render_user(q)},
            {"role": "assistant", "content": R.render_partial("")},
        ]
        yield shown, "", gr.skip(), gr.skip()

        text = ""
        answer: Answer | None = None
        last = time.monotonic()
        try:
            events = self.pipeline.stream(q, history=[dict(m) for m in session.history],
                                          mode=mode or None)
            for kind, payload in events:
                if kind == "delta":
                    text += payload
                    if time.monotonic() - last >= _STREAM_INTERVAL:
                        last = time.monotonic()
                        shown[-1] = {"role": "assistant", "content": R.render_partial(text)}
                        yield list(shown), gr.skip(), gr.skip(), gr.skip()
                elif kind == "reset":
                    text = ""
                elif kind == "answer":
                    answer = payload
        except RagError as e:
            logger.warning("answer failed: %s", e)
            yield self._failed(session, shown, str(e), text)
            return
        except Exception as e:  # noqa: BLE001 - the app must keep running whatever broke
            logger.exception("answer crashed")
            yield self._failed(session, shown, f"Internal error ({type(e).__name__}: {e}). "
                               "The app is still running; try again or rephrase.", text)
            return
        if answer is None:
            yield self._failed(session, shown, "The answer ended without a result.", text)
            return

        turn = len(session.answers)
        shown[-1] = {"role": "assistant", "content": R.render_answer(answer, turn)}
        new = Session(
            display=tuple(shown),
            history=session.history + ({"role": "user", "content": q},
                                       {"role": "assistant", "content": answer.answer}),
            answers=session.answers + (answer,),
        )
        yield list(shown), gr.skip(), R.render_sources(answer, turn, self._doc_for_render), new

    def _failed(self, session: Session, shown: list[dict], message: str,
                partial: str) -> tuple[Any, Any, Any, Any]:
        # The failed turn stays visible but is not added to the history the LLM sees.
        shown[-1] = {"role": "assistant", "content": R.render_error(message, partial)}
        new = Session(display=tuple(shown), history=session.history, answers=session.answers)
        return list(shown), gr.skip(), gr.skip(), new

    def new_chat(self) -> tuple[Any, ...]:
        return ([], "", R.render_sources(None, 0, self._doc_for_render),
                R.render_viewer_message(VIEWER_HINT),
                Session())

    # --- sources and viewer --------------------------------------------------------------------
    def open_ref(self, ref: str | None, session: Session | None) -> tuple[Any, Any, Any]:
        """Open a citation or retrieved passage of this chat: (sources, viewer, doc picker)."""
        session = session or Session()
        m = _REF.fullmatch((ref or "").strip())
        if not m:
            return gr.skip(), R.render_viewer_message("Unknown source reference."), gr.skip()
        kind, turn, k = m.group(1), int(m.group(2)), int(m.group(3))
        if turn >= len(session.answers):
            return (gr.skip(), R.render_viewer_message(
                "That answer belongs to an earlier chat; ask again to see its sources."),
                gr.skip())
        answer = session.answers[turn]
        active = None
        if kind == "cite":
            cit = next((c for c in answer.citations if c.n == k), None)
            if cit is None:
                return gr.skip(), R.render_viewer_message(f"Answer has no citation [{k}]."), \
                    gr.skip()
            source, span = cit.source, (cit.start, cit.end)
            label, active = f"[{k}] {R.lines_label(cit.lines)}", k
        else:
            hit = next((r for r in answer.retrieved if r.rank == k), None)
            if hit is None:
                return gr.skip(), R.render_viewer_message("No such retrieved passage."), \
                    gr.skip()
            source, span = hit.chunk.source, (hit.chunk.start, hit.chunk.end)
            label = f"retrieved passage #{k}, {R.lines_label(hit.chunk.lines)} (not cited)"
        got = self._doc_or_message(source)
        sources = R.render_sources(answer, turn, self._doc_for_render, active=active)
        if isinstance(got, str):
            return sources, R.render_viewer_message(got), gr.skip()
        if got is None:
            return sources, R.render_viewer_message(
                f"{source} is no longer in the index."), gr.skip()
        info, text, kept = got
        return sources, R.render_document(info, text, kept, span=span, label=label), source

    def open_doc(self, source: str | None) -> str:
        """Open a whole indexed article picked from the list (no highlight)."""
        if not source:
            return R.render_viewer_message("Pick an article.")
        got = self._doc_or_message(source)
        if isinstance(got, str):
            return R.render_viewer_message(got)
        if got is None:
            return R.render_viewer_message(f"{source} is not in the index.")
        info, text, kept = got
        return R.render_document(info, text, kept)

    # --- uploads -------------------------------------------------------------------------------
    def add_article(self, file: str | None, progress: Any = None) -> UploadResult:
        """Hand one uploaded file to `pipeline.add_document`. Never raises: returns what
        happened. (Checking, indexing and saving are the pipeline's: the CLI and the HTTP API
        add articles the same way.)"""
        if not file:
            return UploadResult(False, "No file received.")
        src = Path(file)
        name = safe_name(src.name)
        if Path(name).suffix.lower() not in EXTENSIONS:
            return UploadResult(False, f"{src.name}: only .txt and .md articles can be added.")
        limit = self.settings.max_upload_bytes
        try:
            size = src.stat().st_size
            if size > limit:  # checked before reading: the file may be huge
                return UploadResult(False, f"{name} is {size_label(size)}; the limit is "
                                    f"{size_label(limit)} (RAG_MAX_UPLOAD_BYTES).")
            data = src.read_bytes()
        except OSError as e:
            return UploadResult(False, f"{name} could not be read ({e.strerror or e}).")

        meter = RateMeter("passages")

        def step(done: int, total: int, current: str) -> None:
            if progress is not None:
                frac = done / total if total else 1.0
                progress(frac, desc=(f"Embedding {current}: {meter.line(done, total)}"
                                     if current else "Saving"))

        with self._upload_lock:
            try:
                result = self.pipeline.add_document(name, data, progress=step)
            except Exception as e:  # noqa: BLE001 - the app must keep running
                logger.exception("adding %s failed", name)
                return UploadResult(False, f"Adding {name} failed ({type(e).__name__}: {e}).")
        return UploadResult(result.ok, result.message, source=result.source,
                            extra={"already": True} if result.already else {})

    # --- the programmatic API ------------------------------------------------------------------
    def api_ask(self, question: str, history: list | None = None) -> dict:
        """Answer a question (optionally with chat history) and return Answer.to_json()."""
        try:
            answer = self.pipeline.ask(question, history=_history(history))
        except RagError as e:
            raise gr.Error(str(e)) from e
        return answer.to_json()


def _history(history: Any) -> list[dict]:
    """History as [{"role", "content"}]; [user, assistant] pairs are accepted too."""
    if not history:
        return []
    out: list[dict] = []
    for item in history:
        if isinstance(item, dict) and item.get("role") in ("user", "assistant"):
            out.append({"role": item["role"], "content": str(item.get("content", ""))})
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            out += [{"role": "user", "content": str(item[0])},
                    {"role": "assistant", "content": str(item[1])}]
        else:
            raise gr.Error("history must be a list of {role, content} messages or "
                           "[question, answer] pairs")
    return out


def _status_html(result: UploadResult) -> str:
    cls = "ok" if result.ok else "err"
    icon = "✓" if result.ok else "⚠"
    return f'<div class="{cls}">{icon} {R.esc(result.message)}</div>'


def build_ui(pipeline: Any, settings: Settings, upload_dir: Path | None = None) -> gr.Blocks:
    """The Blocks app. Pure construction: no indexing, no model loading here."""
    ui = ChatUI(pipeline, settings, upload_dir)
    limit = settings.concurrency_limit
    with gr.Blocks(title="News Q&A", analytics_enabled=False) as demo:
        session = gr.State(Session())
        gr.Markdown(
            "### Ask the news articles\n"
            "Answers quote and cite the indexed articles (Bulgarian, Macedonian, Serbian, "
            "Ukrainian…). Ask in any of these languages or English; click a **[n]** chip to "
            "open the passage in its article.", elem_id="intro"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=380):
                chat = gr.Chatbot(
                    elem_id="chat", height=520, label="Chat", show_label=False,
                    latex_delimiters=[],  # articles quote prices ("$39.60"): no LaTeX
                    feedback_options=None, sanitize_html=True, line_breaks=True,
                    placeholder="Ask a question about the articles, or pick an example below.",
                )
                with gr.Row():
                    question = gr.Textbox(
                        elem_id="question", show_label=False, scale=6, lines=1, max_lines=4,
                        placeholder="Ask about the articles… (Enter to send)",
                        max_length=settings.max_question_chars, autofocus=True,
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=80,
                                     elem_id="send")
                with gr.Row():
                    new = gr.Button("New chat", size="sm", elem_id="new-chat", scale=0,
                                    min_width=100)
                    mode = gr.Radio(MODES, value=settings.mode, label="Answer mode",
                                    info="auto: written answer when the LLM is reachable, "
                                    "otherwise the articles' own sentences",
                                    elem_id="mode", scale=4)
                samples = load_examples(settings.examples_file)
                examples = gr.Dataset(components=[gr.Textbox(visible=False)],
                                      samples=[[q] for q in samples] or [[""]],
                                      label="Examples", elem_id="examples", type="values",
                                      visible=bool(samples))
                with gr.Accordion("Add an article", open=False, elem_id="add-article"):
                    upload = gr.File(
                        label=f"A .txt or .md file, UTF-8, at most "
                        f"{size_label(settings.max_upload_bytes)}",
                        file_types=list(EXTENSIONS), file_count="single", type="filepath",
                        elem_id="upload",
                    )
                    upload_status = gr.HTML("", elem_id="upload-status")
            with gr.Column(scale=2, min_width=320, elem_id="side"):
                sources = gr.HTML(R.render_sources(None, 0, ui._doc_for_render), elem_id="sources")
                doc_pick = gr.Dropdown(choices=[], value=None, label="Open an indexed article",
                                       show_label=False, container=False, elem_id="doc-pick",
                                       interactive=True)
                viewer = gr.HTML(R.render_viewer_message(VIEWER_HINT), elem_id="viewer")
        # Bridge for the page script: it writes "cite-T-N" here and clicks the button.
        ref_box = gr.Textbox(visible="hidden", elem_id="ref-box")
        ref_open = gr.Button("open", visible="hidden", elem_id="ref-open")

        answer_args: dict[str, Any] = dict(
            fn=ui.respond, inputs=[question, session, mode],
            outputs=[chat, question, sources, session], api_visibility="private",
            concurrency_limit=limit, concurrency_id="answer", show_progress="hidden",
        )
        question.submit(**answer_args)
        send.click(**answer_args)
        examples.click(lambda sample: sample[0], examples, question, queue=False,
                       api_visibility="private").then(**answer_args)
        new.click(ui.new_chat, None, [chat, question, sources, viewer, session],
                  queue=False, api_visibility="private")

        ref_open.click(ui.open_ref, [ref_box, session], [sources, viewer, doc_pick],
                       api_visibility="private", concurrency_limit=4,
                       show_progress="hidden").then(None, js=SCROLL_JS)
        doc_pick.input(ui.open_doc, doc_pick, viewer, api_visibility="private",
                       concurrency_limit=4)

        def on_upload(file: str | None, progress: gr.Progress = gr.Progress()):  # noqa: B008
            result = ui.add_article(file, progress=progress)
            return _status_html(result), gr.update(choices=ui.doc_choices()), None

        upload.upload(on_upload, upload, [upload_status, doc_pick, upload],
                      api_visibility="private", concurrency_limit=1,
                      concurrency_id="index", show_progress_on=[upload_status])

        demo.load(lambda: gr.update(choices=ui.doc_choices()), None, doc_pick,
                  api_visibility="private", queue=False)

        def ask(question: str, history: list | None = None) -> dict:
            """Answer `question` (history: optional [{role, content}] messages) and return
            the answer with its citations as JSON."""
            return ui.api_ask(question, history)

        gr.api(ask, api_name="ask", concurrency_limit=limit, concurrency_id="answer")
    return demo


def prepare(pipeline: Any, settings: Settings, upload_dir: Path | None = None) -> None:
    """Startup: build the index on first run, re-add uploads, and load the models once."""

    meter = RateMeter()
    last = [0.0]

    def log_progress(done: int, total: int, current: str) -> None:
        # One line every few seconds, with rate and time left: a first start on a whole
        # archive indexes for minutes to hours.
        now = time.monotonic()
        line = meter.line(done, total)
        if current and (now - last[0] >= 5 or done == 0):
            last[0] = now
            logger.info("indexing %s: %s", line, current)

    t0 = time.perf_counter()
    report = pipeline.ensure_index(progress=log_progress)
    if report is not None:
        logger.info("built the index: %d articles, %d passages (%.1f s)", report.indexed,
                    report.total_chunks, report.seconds)
    uploads = Path(upload_dir) if upload_dir else upload_dir_for(settings)
    if uploads.is_dir() and any(p.suffix.lower() in EXTENSIONS for p in uploads.iterdir()):
        # Brings back uploads after an index rebuild; unchanged files are skipped by hash.
        pipeline.index(uploads, progress=log_progress)
    # Warm up: models and tables load now, not inside the first user's question.
    warm = getattr(pipeline, "warm", None)
    try:
        if warm is not None:
            warm()
        else:
            pipeline.retrieve("warm up", 1)
    except Exception:  # noqa: BLE001 - answering errors are reported per question instead
        logger.exception("warming up failed")
    logger.info("ready: %d articles indexed (%.1f s)", len(pipeline.documents()),
                time.perf_counter() - t0)


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_serving(settings: Settings, *, insecure: bool = False) -> None:
    """Refuse unsafe ways to serve: a login with one half missing (a misspelled variable would
    otherwise serve everything without one), or an address other machines can reach with no
    login unless `--insecure` says so."""
    if bool(settings.auth_user) != bool(settings.auth_password):
        missing = "RAG_AUTH_PASSWORD" if settings.auth_user else "RAG_AUTH_USER"
        raise RagError(f"The login is half configured: {missing} is not set. Set both "
                       "RAG_AUTH_USER and RAG_AUTH_PASSWORD, or neither.")
    if settings.host not in _LOOPBACK and not settings.auth_user:
        if not insecure:
            raise RagError(
                f"Serving on {settings.host} lets other machines read your articles and ask "
                "questions. Set RAG_AUTH_USER and RAG_AUTH_PASSWORD, or pass --insecure if "
                "this network is trusted.")
        logger.warning("serving on %s without a login (--insecure)", settings.host)


def launch(pipeline: Any, settings: Settings, *, prepare_index: bool = True,
           prevent_thread_lock: bool = False, upload_dir: Path | None = None,
           insecure: bool = False) -> gr.Blocks:
    """Prepare the index, build the UI and serve it on settings.host:settings.port."""
    check_port_free(settings.host, settings.port)
    if prepare_index:
        prepare(pipeline, settings, upload_dir)
    demo = build_ui(pipeline, settings, upload_dir)
    check_serving(settings, insecure=insecure)
    auth = None
    if settings.auth_user and settings.auth_password:
        auth = (settings.auth_user, settings.auth_password)
    demo.queue(default_concurrency_limit=settings.concurrency_limit)
    logger.info("serving the chat UI at http://%s:%d (OpenAI-compatible API at /v1)",
                settings.host, settings.port)
    try:
        _serve(demo, pipeline, settings, auth, prevent_thread_lock)
    except OSError as e:  # taken between the check above and now
        raise RagError(f"Cannot serve on {settings.host}:{settings.port}: {e}") from e
    return demo


def _serve(demo: gr.Blocks, pipeline: Any, settings: Settings, auth: tuple[str, str] | None,
           prevent_thread_lock: bool) -> None:
    from rag.api.http import api_routes

    demo.launch(
        server_name=settings.host, server_port=settings.port, share=False, auth=auth,
        prevent_thread_lock=prevent_thread_lock, show_error=True, ssr_mode=False,
        mcp_server=False, quiet=True,
        # Gradio's own cap protects the disk; add_article gives the precise message below it.
        max_file_size=max(2 * settings.max_upload_bytes, 1_000_000),
        theme=gr.themes.Soft(font=("ui-sans-serif", "system-ui", "sans-serif"),
                             font_mono=("ui-monospace", "monospace")),
        css=CSS, head=HEAD,
        # The OpenAI-compatible API (/v1, /health) on the same server, ahead of Gradio's routes.
        app_kwargs={"routes": api_routes(pipeline, settings)},
    )
