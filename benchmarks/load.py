"""The load run of issue 10: do a large upload and a long conversation slow everyone else down?

    python benchmarks/load.py [--rounds 2] [--clients 18] [--upload-kb 800] [--port 7641]

Starts the product as a user would (`rag serve --mode extractive`, a subprocess on 127.0.0.1)
over a private copy of the seeds, with its own index folder and RAG_CACHE_DIR. Then:

1. unloaded: `--clients` concurrent clients (the real `openai` package) ask the questions of
   seeds/questions.jsonl, `--rounds` times over, each client a fixed share of them;
2. loaded: the same clients ask the same questions while one more client sends conversations
   near the API's limits (RAG_API_MAX_MESSAGES messages, close to RAG_API_MAX_REQUEST_BYTES)
   and one more adds a large article (`--upload-kb` of real text concatenated from
   ../shared/corpora/bsnlp into a temporary folder) with `rag add` against the same index, in
   its own process, as a user at a terminal would.

It prints a table and writes benchmarks/results/load.md: p50/p95 of the clients' answers alone
and under load, their ratio (target ≤ 2×), whether every loaded answer equals the same
question's unloaded answer (text and citations), and whether the added article is retrievable
afterwards. The machine's load average is reported with each phase: on a shared 2-core machine
other people's work is part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
BSNLP = ROOT.parent / "shared" / "corpora" / "bsnlp"
RESULTS = ROOT / "benchmarks" / "results" / "load.md"
MODEL = "newsrag-extractive"
START_DEADLINE_S = 900.0  # first start builds the index on a busy 2-core machine


@dataclass
class Result:
    qid: str
    seconds: float
    ok: bool
    text: str = ""
    citations: tuple = ()
    error: str = ""


@dataclass
class Phase:
    name: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0

    def latencies(self) -> list[float]:
        return [r.seconds for r in self.results if r.ok]

    def errors(self) -> list[Result]:
        return [r for r in self.results if not r.ok]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: a p95 is a latency someone actually had)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def load_questions() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (SEEDS / "questions.jsonl").read_text().splitlines()
            if line.strip()]
    return [(r["id"], r["question"]) for r in rows]


def bsnlp_files() -> list[Path]:
    files = sorted(BSNLP.glob("*/*/*.txt"))
    if not files:
        sys.exit(f"no articles under {BSNLP}: the large upload is made of them")
    return files


def big_article(folder: Path, kb: int) -> Path:
    """One large article: whole bsnlp files, in a fixed order, until `kb` KB of UTF-8."""
    parts, size = [], 0
    for f in bsnlp_files():
        text = f.read_text(encoding="utf-8", errors="replace").strip() + "\n\n"
        n = len(text.encode())
        if size + n > kb * 1000:
            break
        parts.append(text)
        size += n
    path = folder / "load-large-article.txt"
    path.write_text("".join(parts), encoding="utf-8")
    return path


def long_history(question: str, limit_bytes: int, max_messages: int) -> list[dict]:
    """A conversation of max_messages - 1 earlier turns (real article text) and the question,
    about 95 % of the request size limit once serialised as the openai client does."""
    text = "\n".join(f.read_text(encoding="utf-8", errors="replace")
                     for f in bsnlp_files()[-200:])
    turns = max_messages - 1
    per = 4000

    def build(n: int) -> list[dict]:
        msgs = []
        for i in range(turns):
            start = (i * 997) % max(1, len(text) - n)
            msgs.append({"role": "user" if i % 2 == 0 else "assistant",
                         "content": text[start:start + n]})
        return msgs + [{"role": "user", "content": question}]

    def size(msgs: list[dict]) -> int:
        body = {"model": MODEL, "messages": msgs}
        return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())

    while per > 1 and size(build(per)) > 0.95 * limit_bytes:
        per = int(per * 0.9)
    return build(per)


def env_for(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": str(ROOT),
        "RAG_SETTINGS_FILE": str(base / "no-settings.toml"),
        "RAG_DATA_DIR": str(base / "articles"),
        "RAG_INDEX_DIR": str(base / "index"),
        "RAG_CACHE_DIR": str(base / "cache"),
        "RAG_MODE": "extractive",
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
    })
    return env


def rag_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rag.app.cli", *args]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> dict:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"`rag serve` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            health = get_json(f"{url}/health")
            if health.get("status") == "ok":
                return health
        except OSError:
            pass
        time.sleep(1.0)
    sys.exit(f"`rag serve` did not answer /health within {START_DEADLINE_S:.0f} s")


def client(url: str):
    import openai

    # No automatic retries: a 429/503 must show up as what it is.
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=900)


def ask(c, qid: str, messages: list[dict]) -> Result:
    t0 = time.perf_counter()
    try:
        r = c.chat.completions.create(model=MODEL, messages=messages)
    except Exception as e:  # noqa: BLE001 - every failure is a row in the report
        return Result(qid, time.perf_counter() - t0, False, error=f"{type(e).__name__}: {e}")
    dt = time.perf_counter() - t0
    extra = (r.model_extra or {}).get("newsrag") or {}
    cites = tuple((c["source"], c["start"], c["end"]) for c in extra.get("citations", []))
    return Result(qid, dt, True, r.choices[0].message.content or "", cites)


def run_clients(url: str, work: list[list[tuple[str, str]]], phase: Phase) -> None:
    """Each client asks its own list, one question after another (bounded: no loops)."""
    lock = threading.Lock()

    def one(items: list[tuple[str, str]]) -> None:
        c = client(url)
        for qid, q in items:
            res = ask(c, qid, [{"role": "user", "content": q}])
            with lock:
                phase.results.append(res)

    threads = [threading.Thread(target=one, args=(w,)) for w in work]
    phase.load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - t0
    phase.load_after = os.getloadavg()[0]


def retrieved_sources(env: dict, question: str) -> list[str]:
    out = subprocess.run(rag_cmd("retrieve", question, "-k", "5", "--json"), env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return [f"error: {out.stderr.strip()[-300:]}"]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return [h["source"] for h in row["retrieved"]]


def api_limits() -> tuple[int, int]:
    """The limits the served API enforces (the settings' defaults: the server runs with them)."""
    sys.path.insert(0, str(ROOT))
    from rag.settings import Settings

    fields = Settings.model_fields
    return fields["api_max_messages"].default, fields["api_max_request_bytes"].default


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=18)
    ap.add_argument("--rounds", type=int, default=4, help="times each question is asked")
    ap.add_argument("--upload-kb", type=int, default=300, help="size of the large article")
    ap.add_argument("--upload-lead", type=float, default=20.0,
                    help="seconds between starting `rag add` and the clients, so that they run "
                    "while the article is embedded rather than while the process starts")
    ap.add_argument("--port", type=int, default=7641)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="newsrag-load-"))
    (base / "articles").mkdir()
    for f in SEEDS.glob("*.txt"):
        shutil.copy(f, base / "articles" / f.name)
    (base / "upload").mkdir()
    big = big_article(base / "upload", args.upload_kb)
    env = env_for(base)
    url = f"http://127.0.0.1:{args.port}"
    log = base / "serve.log"
    questions = load_questions()
    items = [q for _ in range(args.rounds) for q in questions]
    work = [items[i::args.clients] for i in range(args.clients)]
    history_q = questions[0]
    max_messages, max_bytes = api_limits()
    history = long_history(history_q[1], max_bytes, max_messages)
    history_bytes = len(json.dumps({"model": MODEL, "messages": history}, ensure_ascii=False,
                                   separators=(",", ":")).encode())

    print(f"scratch folder {base}; large article {big.stat().st_size / 1000:.0f} KB; "
          f"history {len(history)} messages, {history_bytes / 1000:.0f} KB", file=sys.stderr)
    with open(log, "w") as logf:
        server = subprocess.Popen(rag_cmd("serve", "--port", str(args.port), "--mode",
                                          "extractive"), env=env, cwd=ROOT, stdout=logf,
                                  stderr=subprocess.STDOUT)
    try:
        t0 = time.perf_counter()
        health = wait_ready(server, url, log)
        print(f"server ready in {time.perf_counter() - t0:.0f} s: {health['index']}",
              file=sys.stderr)
        # One pass alone first, so both measured phases run with warm caches.
        warm = Phase("warm-up")
        run_clients(url, [questions[i::args.clients] for i in range(args.clients)], warm)

        unloaded = Phase("unloaded")
        run_clients(url, work, unloaded)
        print(f"unloaded: {len(unloaded.results)} answers, p95 "
              f"{pct(unloaded.latencies(), 95):.2f} s", file=sys.stderr)

        loaded = Phase("loaded")
        stop = threading.Event()
        hist_results: list[Result] = []

        def history_client() -> None:
            c = client(url)
            for _ in range(1000):  # bounded; normally stopped by the clients finishing
                if stop.is_set():
                    return
                hist_results.append(ask(c, history_q[0], history))

        upload: dict = {}

        def uploader() -> None:
            t = time.perf_counter()
            upload["start"] = t
            out = subprocess.run(rag_cmd("add", str(big)), env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=3600)
            upload.update(end=time.perf_counter(), seconds=time.perf_counter() - t,
                          rc=out.returncode, message=(out.stdout + out.stderr).strip())

        hist_t = threading.Thread(target=history_client)
        up_t = threading.Thread(target=uploader)
        up_t.start()
        time.sleep(args.upload_lead)
        hist_t.start()
        q_start = time.perf_counter()
        run_clients(url, work, loaded)
        q_end = time.perf_counter()
        stop.set()
        hist_t.join()
        up_t.join()
        overlap = max(0.0, min(q_end, upload["end"]) - max(q_start, upload["start"]))
        after = get_json(f"{url}/health")
        # The first questions after the upload see a new index version: the server rebuilds
        # its retriever state (BM25, hubness) for it. Asked once more, not part of the ratio.
        switched = Phase("after the upload")
        run_clients(url, [questions[i::args.clients] for i in range(args.clients)], switched)

        # The added article is retrievable: its own passages find it, through the product.
        big_text = big.read_text(encoding="utf-8")
        probes = [big_text[i:i + 300] for i in (len(big_text) // 4, len(big_text) // 2,
                                                3 * len(big_text) // 4)]
        probes = [" ".join(p.split()[1:-1]) for p in probes]  # whole words only
        found = [big.name in retrieved_sources(env, p) for p in probes]
        api_probe = ask(client(url), "probe", [{"role": "user", "content": probes[1]}])
        api_cites_big = any(src == big.name for src, _, _ in api_probe.citations)
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()

    # Every loaded answer equals the same question's unloaded answer.
    alone: dict[str, set] = {}
    for r in unloaded.results:
        if r.ok:
            alone.setdefault(r.qid, set()).add((r.text, r.citations))
    unstable = sorted(q for q, v in alone.items() if len(v) > 1)
    compared = [r for r in loaded.results if r.ok and r.qid in alone]
    differ = sorted({r.qid for r in compared if (r.text, r.citations) not in alone[r.qid]})

    p95u, p95l = pct(unloaded.latencies(), 95), pct(loaded.latencies(), 95)
    ratio = p95l / p95u if p95u else float("nan")
    hist_ok = [r.seconds for r in hist_results if r.ok]
    rows = [
        ("unloaded", unloaded, unloaded.latencies()),
        ("loaded", loaded, loaded.latencies()),
        ("after the upload (once each)", switched, switched.latencies()),
    ]
    after_same = sum(1 for r in switched.results
                     if r.ok and (r.text, r.citations) in alone.get(r.qid, set()))
    lines = [
        "# Load run (issue 10): a large upload and a long conversation beside "
        f"{args.clients} clients",
        "",
        f"`python benchmarks/load.py --clients {args.clients} --rounds {args.rounds} "
        f"--upload-kb {args.upload_kb}`; `rag serve --mode extractive` over a copy of the seeds "
        f"({health['index']['articles']} articles, {health['index']['passages']} passages), "
        f"model `{MODEL}`, the real `openai` client, no retries. {os.cpu_count()} cores.",
        "",
        "| phase | answers | errors | p50 s | p95 s | max s | wall s | load avg before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, ph, lat in rows:
        lines.append(f"| {name} | {len(lat)} | {len(ph.errors())} | {pct(lat, 50):.2f} | "
                     f"{pct(lat, 95):.2f} | {max(lat, default=float('nan')):.2f} | "
                     f"{ph.seconds:.1f} | {ph.load_before:.1f} → {ph.load_after:.1f} |")
    lines += [
        "",
        f"**p95 loaded / unloaded: {ratio:.2f}×** (target ≤ 2×: "
        f"{'met' if ratio <= 2 else 'MISSED'}).",
        "",
        "The load beside the clients:",
        "",
        f"- long conversation: {len(history)} messages, {history_bytes / 1000:.0f} KB per "
        f"request (limits {max_messages} messages, {max_bytes / 1000:.0f} KB); "
        f"{len(hist_ok)} answered, {len(hist_results) - len(hist_ok)} failed; p50 "
        f"{pct(hist_ok, 50):.2f} s, max {max(hist_ok, default=float('nan')):.2f} s",
        f"- large article: {big.stat().st_size / 1000:.0f} KB from {BSNLP.name} files, "
        f"`rag add` in its own process: exit {upload['rc']} in {upload['seconds']:.1f} s "
        f"({overlap:.1f} s of the clients' {q_end - q_start:.1f} s ran beside it) — "
        f"{upload['message'][-200:]}",
        f"- index after: {after.get('index')}",
        "",
        "Checks:",
        "",
        f"- answers under load equal the same question's answer alone (text and citations): "
        f"{len(compared) - sum(r.qid in differ for r in compared)}/{len(compared)}"
        + (f"; differing: {', '.join(differ)}" if differ else ""),
        f"- after the upload (one article of {after.get('index', {}).get('passages')} passages "
        f"more, on other topics), answers equal to the unloaded ones: {after_same}/"
        f"{len(switched.results)}",
        f"- questions whose unloaded answers already varied between rounds: "
        f"{', '.join(unstable) or 'none'}",
        f"- the added article is retrieved (top 5, `rag retrieve`) by its own passages: "
        f"{sum(found)}/{len(found)}; the API's answer to one of them cites it: "
        f"{'yes' if api_cites_big else 'no'}",
    ]
    errs = unloaded.errors() + loaded.errors() + switched.errors()
    errs += [r for r in hist_results if not r.ok]
    if errs:
        lines += ["", "Errors:", ""] + [f"- {r.qid}: {r.error[:200]}" for r in errs[:20]]
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    if args.keep:
        print(f"kept {base}", file=sys.stderr)
    else:
        shutil.rmtree(base, ignore_errors=True)
    ok = (ratio <= 2 and not errs and not differ and all(found) and upload["rc"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
