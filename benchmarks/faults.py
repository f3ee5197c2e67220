"""The fault matrix of issue 10: every finding (1-16), kill -9 during index / rebuild / upload,
a full disk (a small tmpfs) and a Chroma server stopped mid-session.

    python benchmarks/faults.py [--only 1,9,kill-index] [--port 7961]

Per case it prints what the user saw and whether every article is still retrievable (each
indexed document has its recorded chunks, and a query made of its own first passage finds it).
Write-path cases use the tests' hash embedder (they are about storage, not ranking), so the
whole matrix runs in a few minutes on two cores. Exit status 1 if any row fails.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ["RAG_SETTINGS_FILE"] = str(ROOT / "benchmarks" / "no-such-settings.toml")

from rag.llm.backends import ScriptedChatModel  # noqa: E402
from rag.pipeline import build_pipeline  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import ChromaStore, make_client  # noqa: E402
from rag.types import RagError  # noqa: E402
from tests.conftest import HashEmbedder  # noqa: E402
from tests.fault_store import (  # noqa: E402
    FaultPlan,
    FaultyClient,
    connection_refused,
    disk_full,
)

SEEDS = sorted((ROOT / "seeds").glob("*.txt"))
NOTE_V1 = "Прва верзија на белешката за Кореја.\nВтора реченица за ракетите.\n"
NOTE_V2 = "Втора верзија на белешката за Кореја.\nНова реченица за снарядите.\n"


@dataclass
class Row:
    case: str
    saw: str
    ok: bool
    retrievable: bool | None  # None: the case has no index to check


class Env:
    """A scratch folder with a copy of the seeds and a fresh index per pipeline() call."""

    def __init__(self, base: Path, name: str):
        self.dir = base / name
        self.data = self.dir / "articles"
        self.data.mkdir(parents=True)
        for f in SEEDS:
            shutil.copy(f, self.data / f.name)
        self.emb = HashEmbedder()
        self.settings = load_settings(index_dir=self.dir / "index", data_dir=self.data,
                                      mode="extractive")

    def pipeline(self, plan: FaultPlan | None = None, client=None, **kw):
        settings = self.settings.model_copy(update=kw) if kw else self.settings
        client = client or make_client(settings)
        if plan is not None:
            client = FaultyClient(client, plan)
        store = ChromaStore(client, settings.collection, self.emb.id)
        return build_pipeline(settings, embedder=self.emb, store=store,
                              chat_model=kw.get("chat_model"))


def retrievable(pipe) -> bool:
    """Every indexed document has its recorded chunks and is found by its own first passage."""
    docs = pipe.documents()
    by_source: dict[str, list] = {}
    for c in pipe.store.iter_chunks():
        by_source.setdefault(c.source, []).append(c)
    if set(docs) != set(by_source):
        return False
    for source, info in docs.items():
        chunks = sorted(by_source[source], key=lambda c: c.ordinal)
        if len(chunks) != info.chunks:
            return False
        hits = pipe.retrieve(chunks[0].text[:300], 10)
        # A passage identical to another article's is shown once (syndicated copies): the
        # article counts as found when its own passage text is.
        found = {h.chunk.source for h in hits} | {
            source for h in hits if " ".join(h.chunk.text.split()) ==
            " ".join(chunks[0].text.split())}
        if source not in found:
            return False
    return True


def short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# --- the cases ----------------------------------------------------------------------------------

def case_1(base: Path) -> Row:
    env = Env(base, "c1")
    pipe = env.pipeline()
    pipe.index()
    pipe.add_document("note.txt", NOTE_V1.encode())
    res = env.pipeline(FaultPlan(2, sticky=True)).add_document("note.txt", NOTE_V2.encode())
    saved = (env.settings.index_dir / "uploads" / "note.txt").read_text()
    rejected = pipe.add_document("note.txt", b"menu closed\nmenu open\n")
    after = env.pipeline()
    ok = (not res.ok and not rejected.ok and saved == NOTE_V1
          and (env.settings.index_dir / "uploads" / "note.txt").read_text() == NOTE_V1)
    # With Chroma failing, the undo may fail too: the next start (index of uploads) repairs.
    after.index(env.settings.index_dir / "uploads")
    return Row("1 re-upload: Chroma write error / rejected", short(f"{res.message} | "
               f"{rejected.message}"), ok, retrievable(after))


def case_2(base: Path) -> Row:
    env = Env(base, "c2")
    (env.data / "bg").mkdir()
    (env.data / "mk").mkdir()
    shutil.copy(SEEDS[3], env.data / "bg" / "a.txt")
    shutil.copy(SEEDS[1], env.data / "mk" / "a.txt")
    pipe = env.pipeline()
    pipe.index()
    again = pipe.index()
    ok = {"bg/a.txt", "mk/a.txt"} <= set(pipe.documents()) and again.indexed == 0 \
        and again.removed == 0
    return Row("2 same name in two sub-folders", f"second run: {again.indexed} indexed, "
               f"{again.removed} removed", ok, retrievable(pipe))


def case_3(base: Path) -> Row:
    env = Env(base, "c3")
    pipe = env.pipeline()
    pipe.index()
    try:
        env.pipeline(FaultPlan(4)).index(rebuild=True)
        saw = "rebuild did not fail?"
    except Exception as e:  # noqa: BLE001
        saw = f"rebuild failed: {e}"
    try:
        env.pipeline(FaultPlan(1, error=connection_refused())).store.reset()
        reset = "reset() returned"
    except RagError as e:
        reset = f"reset() raised: {e}"
    after = env.pipeline()
    ok = "raised" in reset and len(after.documents()) == len(SEEDS)
    return Row("3 rebuild interrupted; reset errors", short(f"{saw} | {reset}"), ok,
               retrievable(after))


def case_4(base: Path) -> Row:
    env = Env(base, "c4")
    app = env.pipeline()
    app.index()
    app.retrieve("warm", 1)
    (env.data / "new.txt").write_text(NOTE_V2, encoding="utf-8")
    env.pipeline().index()  # the CLI, another client
    hit = app.retrieve(NOTE_V2, 3)[0].chunk.source
    return Row("4 the app sees a CLI re-index", f"top hit after CLI index: {hit}",
               hit == "new.txt", retrievable(app))


def case_5(base: Path) -> Row:
    from rag.answering.answer import Answerer

    env = Env(base, "c5")
    pipe = env.pipeline()
    pipe.index()
    model = ScriptedChatModel([RagError("HTTP 500"), "never used [1]."])
    answerer = Answerer(pipe.retriever, env.emb, env.settings.model_copy(update={"mode": "auto"}),
                        chat_model=model)
    first = answerer.ask("Колко артилерийски снаряда?")
    second = answerer.ask("Колко артилерийски снаряда?")
    ok = first.mode == second.mode == "extractive" and len(model.calls) == 1
    return Row("5 failed generation resets 'backend OK'", short(
        f"{first.mode}, then {second.mode} without calling the LLM again "
        f"({len(model.calls)} call)"), ok, None)


def case_6(base: Path) -> Row:
    from importlib import resources

    d = Path(str(resources.files("rag").joinpath("data", "prompts")))
    files = sorted(p.name for p in d.iterdir())
    ok = "phrases.json" in files and load_settings().prompts_dir == d
    return Row("6 prompts inside the package", short(f"{d.relative_to(ROOT)}: {files}; wheel "
               "install: tests/test_wheel.py"), ok, None)


def case_7(base: Path) -> Row:
    from rag.pipeline import Pipeline, PipelineProtocol
    from tests.ui_fakes import FakePipeline

    bad = []
    for name, member in vars(PipelineProtocol).items():
        if name.startswith("_") or not callable(member):
            continue
        want = list(inspect.signature(member).parameters)
        for cls in (Pipeline, FakePipeline):
            if list(inspect.signature(getattr(cls, name)).parameters) != want:
                bad.append(f"{cls.__name__}.{name}")
    return Row("7 UI fake implements Pipeline's Protocol", "mismatches: " + (", ".join(bad)
               or "none"), not bad, None)


class _Down:
    def __getattr__(self, name):
        def fail(*a, **kw):
            raise ConnectionRefusedError(111, "Connection refused")
        return fail


def case_8(base: Path) -> Row:
    from rag.app.ui import ChatUI, Session

    env = Env(base, "c8")
    pipe = env.pipeline()
    pipe.index()
    answer = pipe.ask("Колко артилерийски снаряда?")
    store = ChromaStore(_Down(), env.settings.collection, env.emb.id)
    down = build_pipeline(env.settings, embedder=env.emb, store=store)
    ui = ChatUI(down, env.settings)
    _, viewer, _ = ui.open_ref("cite-0-1", Session(answers=(answer,)))
    ok = "cannot be reached" in viewer and "no longer in the index" not in viewer
    return Row("8 Chroma outage is not 'not in the index'", short(viewer.split(">", 1)[-1]),
               ok, retrievable(env.pipeline()))


def case_9(base: Path) -> Row:
    env = Env(base, "c9")
    pipe = env.pipeline()
    pipe.index()
    orig = SEEDS[3].name
    before = sorted(c.id for c in pipe.store.iter_chunks() if c.source == orig)
    shutil.copy(env.data / orig, env.data / "copy.txt")
    pipe.index()
    (env.data / "copy.txt").unlink()
    pipe.index()
    after = sorted(c.id for c in pipe.store.iter_chunks() if c.source == orig)
    return Row("9 copy, index, delete copy, index", f"{orig}: {len(before)} chunks before, "
               f"{len(after)} after", before == after and bool(after), retrievable(pipe))


def case_10(base: Path) -> Row:
    env = Env(base, "c10")
    (env.data / "link.txt").symlink_to("/etc/passwd")
    pipe = env.pipeline()
    report = pipe.index()
    try:
        pipe.index(Path("/etc/passwd"))
        single = "indexed /etc/passwd"
    except RagError as e:
        single = str(e)
    leaked = any("root:" in c.text for c in pipe.store.iter_chunks())
    why = next((w for f, w in report.skipped if f.endswith("link.txt")), "not reported")
    return Row("10 symlink out of the folder; rag index /etc/passwd", short(
        f"link.txt {why} | {single}"), not leaked and "not a .txt" in single, retrievable(pipe))


def case_11(base: Path) -> Row:
    from rag.indexing.ingest import document_from_bytes

    text = " ".join(SEEDS[3].read_text(encoding="utf-8").split())
    big = (" ".join(f"{i}. {text}" for i in range(300)))[:300_000]
    t0 = time.perf_counter()
    doc = document_from_bytes(big.encode(), "big.txt", "big.txt")
    from rag.indexing.chunking import chunk_document

    chunks = chunk_document(doc)
    s = time.perf_counter() - t0
    return Row("11 300 kB one-line article", f"cleaned and chunked in {s:.2f} s "
               f"({len(chunks)} chunks; was ~8.7 min)", s < 30, None)


def case_12(base: Path) -> Row:
    env = Env(base, "c12")
    pipe = env.pipeline()
    pipe.index()
    history = [{"role": "user", "content": "x " * 50_000},
               {"role": "assistant", "content": "y " * 50_000}]
    t0 = time.perf_counter()
    a = pipe.ask("Колко артилерийски снаряда?", history=history)
    s = time.perf_counter() - t0
    return Row("12 200k characters of history", f"answered in {s:.2f} s "
               f"(history trimmed to {env.settings.max_history_chars} chars)",
               bool(a.citations), None)


def case_13(base: Path) -> Row:
    from rag.answering.answer import Answerer
    from rag.llm.backends import OllamaChatModel
    from tests.fake_ollama import FakeOllama

    env = Env(base, "c13")
    pipe = env.pipeline()
    pipe.index()
    release = threading.Event()

    class Hanging(ScriptedChatModel):
        def stream(self, messages):
            release.wait()
            yield from super().stream(messages)

    settings = env.settings.model_copy(update={"mode": "auto", "llm_first_token_timeout": 3.0})
    seen, ok = [], True
    q = "Колко артилерийски снаряда?"
    for label, model in (
        ("500", ScriptedChatModel([RagError("Ollama failed: HTTP 500")])),
        ("non-JSON", ScriptedChatModel([ValueError("Expecting value: line 1 column 1")])),
        ("hang", Hanging(["x"])),
    ):
        t0 = time.perf_counter()
        a = Answerer(pipe.retriever, env.emb, settings, chat_model=model).ask(q)
        seen.append(f"{label}: {a.mode} in {time.perf_counter() - t0:.1f} s")
        ok &= a.mode == "extractive" and bool(a.notes)
    release.set()
    with FakeOllama(replies=["Почти 5 [1]."], stream_error="runner crashed") as server:
        s2 = settings.model_copy(update={"ollama_url": server.url})
        a = Answerer(pipe.retriever, env.emb, s2, chat_model=OllamaChatModel(s2)).ask(q)
        seen.append(f"half stream: {a.mode}")
        ok &= a.mode == "extractive" and not any("ollama serve" in n for n in a.notes)
    return Row("13 auto mode: 500 / non-JSON / hang / half stream", "; ".join(seen), ok, None)


def case_14(base: Path) -> Row:
    return Row("14 follow-up detection, no-letter questions", "owned by another worker "
               "(issue 10 item 14)", True, None)


def case_15(base: Path) -> Row:
    from rag.app.ui import ChatUI, Session

    env = Env(base, "c15")
    pipe = env.pipeline()
    pipe.index()
    pipe.retrieve("warm", 1)
    (env.settings.index_dir / "bm25-news" / "chunks.json").write_text("[]")
    fresh = env.pipeline()
    bm25 = "answers after a damaged BM25 cache" if fresh.retrieve("Кореја", 3) else "no hits"
    full = env.pipeline(FaultPlan(1, sticky=True, error=disk_full()))
    res = full.add_document("new.txt", NOTE_V2.encode())
    store = ChromaStore(_Down(), env.settings.collection, env.emb.id)
    ui = ChatUI(build_pipeline(env.settings, embedder=env.emb, store=store), env.settings)
    chat = list(ui.respond("Колко снаряда?", Session(), "extractive"))[-1][0][-1]["content"]
    (env.data / "u16.txt").write_bytes(SEEDS[0].read_text(encoding="utf-8").encode("utf-16"))
    r = env.pipeline().index()
    ok = ("free some space" in res.message and "cannot be reached" in chat
          and r.indexed == 1 and not r.skipped)
    return Row("15 damaged BM25 / full disk / Chroma down in app / UTF-16", short(
        f"{bm25} | {res.message} | app: {chat.split('>', 1)[-1][:60]} | UTF-16: {r.indexed} "
        "indexed"), ok, retrievable(env.pipeline()))


def case_16(base: Path) -> Row:
    from rag.app.ui import check_serving

    seen = []
    for kw, insecure in (({"auth_user": "me"}, False), ({"host": "0.0.0.0"}, False),
                         ({"host": "0.0.0.0"}, True)):
        try:
            check_serving(load_settings(**kw), insecure=insecure)
            seen.append("starts")
        except RagError as e:
            seen.append(f"refused ({short(str(e), 50)})")
    ok = seen[0].startswith("refused") and seen[1].startswith("refused") and seen[2] == "starts"
    return Row("16 half-configured login; 0.0.0.0 without --insecure", " | ".join(seen), ok,
               None)


def _kill(op: str) -> Callable[[Path], Row]:
    def prepare(env: Env) -> Path:
        upload = env.dir / "note.txt"
        upload.write_text(NOTE_V2, encoding="utf-8")
        if op != "index":
            pipe = env.pipeline()
            pipe.index()
            pipe.add_document("note.txt", NOTE_V1.encode())
        return upload

    def run(base: Path) -> Row:
        cmd = [sys.executable, "-m", "tests.crash_helper"]
        penv = dict(os.environ, PYTHONPATH=str(ROOT))
        # Count the run's writes on an identical setup, then kill a real run in its middle.
        probe_env = Env(base, f"kill-{op}-probe")
        upload = prepare(probe_env)
        probe = subprocess.run([*cmd, str(probe_env.settings.index_dir), str(probe_env.data),
                                op, "0", str(upload)], cwd=ROOT, env=penv, capture_output=True,
                               text=True)
        if probe.returncode != 0 or "writes=" not in probe.stdout:
            raise RuntimeError(f"probe run failed: {probe.stdout[-300:]} {probe.stderr[-300:]}")
        total = int(probe.stdout.strip().splitlines()[-1].split("=")[1])
        at = max(1, total // 2)
        env = Env(base, f"kill-{op}")
        upload = prepare(env)
        killed = subprocess.run([*cmd, str(env.settings.index_dir), str(env.data), op,
                                 str(at), str(upload)], cwd=ROOT, env=penv,
                                capture_output=True, text=True)
        pipe = env.pipeline()
        pipe.index()
        if op != "index":
            pipe.index(env.settings.index_dir / "uploads")
        return Row(f"kill -9 during {op}", f"killed at write {at}/{total} "
                   f"(exit {killed.returncode}); re-run: {len(pipe.documents())} documents",
                   killed.returncode == -9, retrievable(pipe))
    return run


def case_tmpfs(base: Path) -> Row:
    mnt = base / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        return Row("full disk (tmpfs)", "skipped: cannot mount a tmpfs here", True, None)
    try:
        env = Env(base, "tmpfs-case")
        settings = env.settings.model_copy(update={"index_dir": mnt / "index"})
        client = make_client(settings)
        store = ChromaStore(client, settings.collection, env.emb.id,
                            local_path=settings.index_dir)
        pipe = build_pipeline(settings, embedder=env.emb, store=store)
        pipe.index()
        big = " ".join(f"{i}. " + " ".join(SEEDS[3].read_text(encoding="utf-8").split())
                       for i in range(2000))
        (env.dir / "big").mkdir()
        for i in range(6):
            (env.dir / "big" / f"big{i}.txt").write_text(big[: 900_000], encoding="utf-8")
        try:
            report = pipe.index(env.dir / "big")
            saw = f"no error? {report.indexed} indexed"
        except RagError as e:
            saw = str(e)
        except Exception as e:  # noqa: BLE001 - shown as the raw error the user would see
            saw = f"RAW {type(e).__name__}: {e}"
        seeds_ok = all(pipe.document(f.name) is not None for f in SEEDS)
        return Row("full disk (6 MB tmpfs)", short(saw), "full" in saw and seeds_ok, seeds_ok)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def case_server(base: Path, port: int) -> Row:
    exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
    data = base / "server-data"

    def start():
        p = subprocess.Popen([exe, "run", "--path", str(data), "--host", "127.0.0.1", "--port",
                              str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return p
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("chroma run did not start")

    proc = start()
    try:
        env = Env(base, "server")
        settings = env.settings.model_copy(update={"chroma_host": "127.0.0.1",
                                                   "chroma_port": port})
        pipe = build_pipeline(settings, embedder=env.emb)
        pipe.index()
        proc.terminate()
        proc.wait(20)
        try:
            pipe.ask("Колко артилерийски снаряда?")
            saw = "answered with the server down?"
        except RagError as e:
            saw = str(e)
        proc = start()
        ok = "cannot be reached" in saw
        return Row("Chroma server stopped mid-session", short(saw), ok, retrievable(pipe))
    finally:
        proc.terminate()
        proc.wait(20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated case keys (1..16, kill-index, kill-rebuild, "
                    "kill-upload, tmpfs, server)")
    ap.add_argument("--port", type=int, default=7961, help="port for the Chroma server case")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    cases: dict[str, Callable[[Path], Row]] = {
        str(i): globals()[f"case_{i}"] for i in range(1, 17)
    }
    cases.update({"kill-index": _kill("index"), "kill-rebuild": _kill("rebuild"),
                  "kill-upload": _kill("upload"), "tmpfs": case_tmpfs,
                  "server": lambda b: case_server(b, args.port)})
    keys = args.only.split(",") if args.only else list(cases)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rag-faults-") as tmp:
        for key in keys:
            t0 = time.perf_counter()
            try:
                row = cases[key](Path(tmp))
            except Exception as e:  # noqa: BLE001 - a crashing case is a failed row
                row = Row(key, f"CRASHED {type(e).__name__}: {short(str(e), 80)}", False, None)
            rows.append(row)
            mark = "PASS" if row.ok and row.retrievable is not False else "FAIL"
            kept = {True: "yes", False: "NO", None: "-"}[row.retrievable]
            print(f"{mark}  {row.case:<52} all retrievable: {kept:<3}  "
                  f"({time.perf_counter() - t0:.0f} s)\n      saw: {row.saw}", flush=True)
    failed = [r for r in rows if not r.ok or r.retrievable is False]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} rows pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
