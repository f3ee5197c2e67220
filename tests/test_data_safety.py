"""Never lose an article: document identity, write order, rebuilds aside, uploads, crashes.

Faults are injected with tests/fault_store.py (a client wrapper that fails on the n-th write)
and, for kill -9, in a subprocess (tests/crash_helper.py) killed at its n-th write. After every
fault the index must still hold every article, and one clean re-run must give exactly the
state of a clean build: same documents, same chunk ids, no duplicates, no orphans.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.pipeline import build_pipeline
from rag.store import ChromaStore, LegacyIndexError, make_client, open_store
from rag.types import RagError
from tests.conftest import ROOT, SEED_FILES
from tests.fault_store import FaultPlan, FaultyClient, InjectedFault, connection_refused, disk_full

NEW_TEXT = "Сосема нов текст за Северна Кореја.\nВтора реченица за ракетите.\n"


def _pipe(settings, emb, plan: FaultPlan | None = None):
    client = make_client(settings)
    if plan is not None:
        client = FaultyClient(client, plan)
    store = ChromaStore(client, settings.collection, emb.id)
    return build_pipeline(settings, embedder=emb, store=store)


def snapshot(store: ChromaStore) -> dict:
    """What a user could get out of the index: documents with their hash and chunks."""
    docs = store.documents()
    by_source: dict[str, list[str]] = {}
    for c in store.iter_chunks():
        by_source.setdefault(c.source, []).append(c.id)
    return {
        "docs": {s: (i.sha256, i.chunks) for s, i in docs.items()},
        "chunks": {s: sorted(ids) for s, ids in by_source.items()},
    }


def consistent(snap: dict) -> bool:
    """Every document has exactly its recorded number of chunks, and no chunk is orphaned."""
    return (set(snap["docs"]) == set(snap["chunks"])
            and all(len(snap["chunks"][s]) == n for s, (_, n) in snap["docs"].items()))


def clean_build(settings_factory, emb, data: Path, tmp_path: Path, uploads: Path | None = None):
    s = settings_factory(index_dir=tmp_path / "clean-index", data_dir=data)
    pipe = _pipe(s, emb)
    pipe.index()
    if uploads is not None and uploads.is_dir():
        pipe.index(uploads)
    return snapshot(pipe.store)


# --- identity ------------------------------------------------------------------------------------

def test_same_file_name_in_two_folders_are_two_documents_that_settle(settings_factory,
                                                                      hash_embedder, tmp_path):
    data = tmp_path / "data"
    (data / "bg").mkdir(parents=True)
    (data / "mk").mkdir()
    shutil.copy(SEED_FILES[3], data / "bg" / "a.txt")
    shutil.copy(SEED_FILES[1], data / "mk" / "a.txt")
    pipe = _pipe(settings_factory(data_dir=data), hash_embedder)
    first = pipe.index()
    assert set(pipe.documents()) == {"bg/a.txt", "mk/a.txt"}
    again = pipe.index()
    assert (again.indexed, again.removed, again.unchanged) == (0, 0, 2)
    assert again.total_chunks == first.total_chunks
    assert {c.source for c in pipe.store.iter_chunks()} == {"bg/a.txt", "mk/a.txt"}


def test_a_flat_folder_keeps_file_names_and_a_single_file_its_name(settings_factory,
                                                                    hash_embedder, seeds_copy):
    pipe = _pipe(settings_factory(data_dir=seeds_copy), hash_embedder)
    pipe.index()
    assert set(pipe.documents()) == {f.name for f in SEED_FILES}
    one = seeds_copy.parent / "one" / "sub"
    one.mkdir(parents=True)
    shutil.copy(SEED_FILES[0], one / "x.txt")
    pipe.index(one / "x.txt")
    assert "x.txt" in pipe.documents()


def test_a_copy_never_takes_the_originals_passages(settings_factory, hash_embedder, seeds_copy):
    """Finding 9: cp 003 copy.txt; index; rm copy.txt; index → 003 keeps all its chunks."""
    pipe = _pipe(settings_factory(data_dir=seeds_copy), hash_embedder)
    pipe.index()
    orig = SEED_FILES[3].name
    before = snapshot(pipe.store)["chunks"][orig]
    shutil.copy(seeds_copy / orig, seeds_copy / "copy.txt")
    pipe.index()
    snap = snapshot(pipe.store)
    assert len(snap["chunks"]["copy.txt"]) == len(before)
    assert not set(snap["chunks"]["copy.txt"]) & set(before)
    (seeds_copy / "copy.txt").unlink()
    pipe.index()
    assert snapshot(pipe.store)["chunks"][orig] == before


def test_symlinks_and_other_file_types_are_not_indexed(settings_factory, hash_embedder,
                                                       seeds_copy, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (seeds_copy / "link.txt").symlink_to(outside)
    (seeds_copy / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    (seeds_copy / "notes.csv").write_text("a,b\n")
    pipe = _pipe(settings_factory(data_dir=seeds_copy), hash_embedder)
    report = pipe.index()
    assert set(pipe.documents()) == {f.name for f in SEED_FILES}
    assert any("symbolic link" in why for _, why in report.skipped)
    assert not any("root:x" in c.text for c in pipe.store.iter_chunks())
    with pytest.raises(RagError, match="not a .txt or .md"):
        pipe.index(Path("/etc/passwd"))
    with pytest.raises(RagError, match="symbolic link"):
        pipe.index(seeds_copy / "link.txt")


def test_utf16_articles_are_read(settings_factory, hash_embedder, tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    text = SEED_FILES[0].read_text(encoding="utf-8")
    (data / "u16.txt").write_bytes(text.encode("utf-16"))
    pipe = _pipe(settings_factory(data_dir=data), hash_embedder)
    report = pipe.index()
    assert report.indexed == 1 and not report.skipped
    info, stored, _ = pipe.document("u16.txt")
    assert stored == text
    for c in pipe.store.iter_chunks():
        assert stored[c.start:c.end] == c.text


# --- write order under injected faults ----------------------------------------------------

def _count_writes(settings_factory, emb, tmp_path, prepare, op) -> int:
    s = settings_factory(index_dir=tmp_path / "count-index")
    prepare(s)
    plan = FaultPlan()
    pipe = _pipe(s, emb, plan)
    before = plan.writes
    op(pipe)
    return plan.writes - before


@pytest.mark.parametrize("op_name", ["reindex-changed", "rebuild", "remove"])
def test_a_failed_write_at_any_point_loses_nothing(settings_factory, hash_embedder, seeds_copy,
                                                    tmp_path, op_name):
    changed = seeds_copy / SEED_FILES[1].name
    removed = seeds_copy / SEED_FILES[4].name

    def prepare(s):
        shutil.rmtree(seeds_copy)
        shutil.copytree(SEED_FILES[0].parent, seeds_copy, ignore=shutil.ignore_patterns("*.jsonl"))
        _pipe(s, hash_embedder).index()
        if op_name == "reindex-changed":
            changed.write_text(NEW_TEXT, encoding="utf-8")
        elif op_name == "remove":
            removed.unlink()

    def op(pipe):
        pipe.index(rebuild=op_name == "rebuild")

    total = _count_writes(lambda **kw: settings_factory(data_dir=seeds_copy, **kw),
                          hash_embedder, tmp_path, prepare, op)
    assert total >= 3
    for n in range(1, total + 1):
        # A fresh index folder each time: Chroma keeps a process-wide client per path.
        settings = settings_factory(data_dir=seeds_copy, index_dir=tmp_path / f"index{n}")
        prepare(settings)
        before = snapshot(_pipe(settings, hash_embedder).store)
        pipe = _pipe(settings, hash_embedder, FaultPlan(n))
        try:
            op(pipe)
            # Only a version stamp failed (best effort, after the commit): the run completed.
            assert pipe.store.client.plan.failed == 1, n
        except InjectedFault:
            pass
        after = snapshot(_pipe(settings, hash_embedder).store)
        # Nothing lost: every article indexed before is still there with passages.
        for source in before["docs"]:
            if op_name == "remove" and source == removed.name:
                continue
            assert after["chunks"].get(source), (n, source)
            assert source in after["docs"], (n, source)
        if op_name == "rebuild" and n < total:
            assert after == before, n  # the old index served untouched
        # One clean re-run repairs to exactly a clean build.
        _pipe(settings, hash_embedder).index()
        repaired = snapshot(_pipe(settings, hash_embedder).store)
        assert consistent(repaired), n
        assert repaired == clean_build(settings_factory, hash_embedder, seeds_copy,
                                       tmp_path / f"clean{n}"), n


def test_failed_reupload_keeps_the_previous_file_and_entry(settings_factory, hash_embedder,
                                                            seeds_copy, tmp_path):
    settings = settings_factory(data_dir=seeds_copy)
    first = _pipe(settings, hash_embedder).add_document("note.txt", NEW_TEXT.encode())
    assert first.ok, first.message
    saved = settings.index_dir / "uploads" / "note.txt"
    before = snapshot(_pipe(settings, hash_embedder).store)
    new = SEED_FILES[2].read_bytes()
    plan = FaultPlan()
    _pipe(settings, hash_embedder, plan)  # how many writes a successful re-upload takes:
    probe = settings_factory(index_dir=tmp_path / "probe", data_dir=seeds_copy)
    _pipe(probe, hash_embedder).add_document("note.txt", NEW_TEXT.encode())
    count = FaultPlan()
    _pipe(probe, hash_embedder, count).add_document("note.txt", new)
    assert count.writes >= 3
    for n in range(1, count.writes + 1):
        for sticky in (False, True):
            res = _pipe(settings, hash_embedder, FaultPlan(n, sticky=sticky)).add_document(
                "note.txt", new)
            if n == count.writes:  # only the version stamp failed: the write was complete
                assert res.ok and saved.read_bytes() == new, res.message
                assert consistent(snapshot(_pipe(settings, hash_embedder).store))
                saved.write_bytes(NEW_TEXT.encode())  # back to the previous version
                _pipe(settings, hash_embedder).index(saved.parent)
                continue
            assert not res.ok and "not added" in res.message, (n, sticky, res.message)
            assert saved.read_bytes() == NEW_TEXT.encode(), (n, sticky)
            after = snapshot(_pipe(settings, hash_embedder).store)
            assert after["docs"] == before["docs"], (n, sticky)
            if not sticky:  # the undo ran: exactly the previous state
                assert after == before, n
            else:  # the undo failed too: the next index run repairs it
                _pipe(settings, hash_embedder).index(settings.index_dir / "uploads")
                assert snapshot(_pipe(settings, hash_embedder).store) == before, n


def test_rejected_reupload_keeps_the_previous_file_and_entry(settings_factory, hash_embedder,
                                                             seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    pipe = _pipe(settings, hash_embedder)
    assert pipe.add_document("note.txt", NEW_TEXT.encode()).ok
    before = snapshot(pipe.store)
    for bad in (b"menu closed\nmenu open\n", b"", b"\x00\x01binary", b"\xff\xfe\xfa" * 3):
        res = pipe.add_document("note.txt", bad)
        assert not res.ok
        assert (settings.index_dir / "uploads" / "note.txt").read_text() == NEW_TEXT
        assert snapshot(pipe.store) == before


def test_upload_on_a_full_disk_or_dead_server_says_what_to_do(settings_factory, hash_embedder,
                                                              seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    _pipe(settings, hash_embedder).index()
    full = _pipe(settings, hash_embedder, FaultPlan(1, sticky=True, error=disk_full()))
    res = full.add_document("new.txt", NEW_TEXT.encode())
    assert not res.ok and "disk" in res.message and "free some space" in res.message
    down = _pipe(settings, hash_embedder, FaultPlan(1, sticky=True, error=connection_refused()))
    res = down.add_document("new.txt", NEW_TEXT.encode())
    assert not res.ok and "Chroma server cannot be reached" in res.message
    with pytest.raises(RagError, match="full"):
        full.index(rebuild=True)
    assert not (settings.index_dir / "uploads" / "new.txt").exists()


# --- rebuild aside, legacy index, reset ----------------------------------------------------

def test_rebuild_switches_only_when_complete_and_drops_the_old_generation(
        settings_factory, hash_embedder, seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    pipe = _pipe(settings, hash_embedder)
    pipe.index()
    pipe.add_document("note.txt", NEW_TEXT.encode())
    before = snapshot(pipe.store)
    version = pipe.store.version()
    pipe.index(rebuild=True)
    assert snapshot(pipe.store) == before  # uploads are carried over by a rebuild
    assert pipe.store.version() != version
    names = {c.name for c in pipe.store.client.list_collections()}
    assert names == {"news-meta", "news-g2", "news-g2-docs"}


def test_index_from_the_previous_release_is_rebuilt_not_mixed(settings_factory, hash_embedder,
                                                               seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    client = make_client(settings)
    legacy = client.get_or_create_collection("news", embedding_function=None,
                                             metadata={"embed_id": hash_embedder.id})
    legacy.upsert(ids=["old1"], embeddings=[[0.1] * 64], documents=["old"],
                  metadatas=[{"source": "000.txt", "start": 0, "end": 3, "line_start": 1,
                              "line_end": 1}])
    client.get_or_create_collection("news-docs", embedding_function=None)
    pipe = _pipe(settings, hash_embedder)
    assert pipe.store.state() == "legacy" and not pipe.store.exists()
    with pytest.raises(LegacyIndexError, match="rebuild"):
        pipe.retrieve("Северна Кореја")
    report = pipe.ensure_index()
    assert report is not None and report.indexed == 5
    assert "old1" not in pipe.store.chunk_ids()
    assert "news" not in {c.name for c in pipe.store.client.list_collections()}
    assert pipe.retrieve("Северна Кореја")


def test_reset_does_not_swallow_errors(settings_factory, hash_embedder, seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    _pipe(settings, hash_embedder).index()
    pipe = _pipe(settings, hash_embedder, FaultPlan(1, error=connection_refused()))
    with pytest.raises(RagError, match="cannot be reached"):
        pipe.store.reset()


def test_chroma_outage_is_not_reported_as_a_missing_index(settings_factory, hash_embedder,
                                                          seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    _pipe(settings, hash_embedder).index()

    class DownClient:
        def __getattr__(self, name):
            def fail(*a, **kw):
                raise ConnectionRefusedError(111, "Connection refused")
            return fail

    store = ChromaStore(DownClient(), settings.collection, hash_embedder.id)
    with pytest.raises(RagError, match="cannot be reached"):
        store.exists()
    with pytest.raises(RagError, match="cannot be reached"):
        store.document_text("000.txt")


# --- readers see writers --------------------------------------------------------------------

def test_a_reader_sees_another_processs_reindex(settings_factory, hash_embedder, seeds_copy):
    settings = settings_factory(data_dir=seeds_copy)
    app = _pipe(settings, hash_embedder)
    app.index()
    assert app.retrieve("Сосема нов текст ракетите", 5)[0].chunk.source != "new.txt"
    (seeds_copy / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    _pipe(settings, hash_embedder).index()  # "the CLI", another client on the same index
    assert app.retrieve("Сосема нов текст ракетите", 5)[0].chunk.source == "new.txt"
    _pipe(settings, hash_embedder).index(rebuild=True)
    assert app.retrieve("Сосема нов текст ракетите", 5)[0].chunk.source == "new.txt"


def test_a_running_reader_sees_an_upload_from_another_process(settings_factory, hash_embedder,
                                                              seeds_copy, tmp_path):
    """The load run of issue 10: after `rag add` in another process, a running server with a
    local index failed every question ("Error finding id": Chroma's in-memory segments were
    stale). Another client in the same process shares them, so only a real process shows it."""
    settings = settings_factory(data_dir=seeds_copy)
    app = build_pipeline(settings, embedder=hash_embedder,
                         store=open_store(settings, embed_id=hash_embedder.id))
    app.index()
    assert app.retrieve("Сосема нов текст ракетите", 5)[0].chunk.source != "new.txt"
    upload = tmp_path / "new.txt"
    upload.write_text(NEW_TEXT, encoding="utf-8")
    out = _run_killed(settings.index_dir, seeds_copy, "upload", 0, upload)
    assert out.returncode == 0, out.stderr
    assert app.retrieve("Сосема нов текст ракетите", 5)[0].chunk.source == "new.txt"
    assert app.ask("Сосема нов текст ракетите?", mode="extractive").citations


def test_damaged_bm25_cache_is_rebuilt_with_a_log_line(settings_factory, hash_embedder,
                                                       seeds_copy, caplog):
    settings = settings_factory(data_dir=seeds_copy, bm25_weight=1.0)  # BM25 is off by default
    pipe = _pipe(settings, hash_embedder)
    pipe.index()
    pipe.retrieve("Северна Кореја")
    from rag.retrieval.hybrid import wait_for_cache_writes

    wait_for_cache_writes()  # the cache files are written by a background thread
    cache = next((settings.index_dir / "bm25-news").glob("bm25-*")) / "chunks.json"
    cache.write_text("[]")
    fresh = _pipe(settings, hash_embedder)
    with caplog.at_level("WARNING"):
        assert fresh.retrieve("Северна Кореја")
    assert "damaged" in caplog.text


# --- kill -9 --------------------------------------------------------------------------------

def _run_killed(index_dir: Path, data: Path, op: str, kill_at: int,
                upload: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.crash_helper", str(index_dir), str(data), op,
           str(kill_at)] + ([str(upload)] if upload else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["index", "rebuild", "upload"])
def test_kill_9_at_any_write_then_rerun_gives_a_clean_build(settings_factory, hash_embedder,
                                                            seeds_copy, tmp_path, op):
    upload = tmp_path / "note.txt"
    upload.write_bytes(SEED_FILES[2].read_bytes().replace(b"\n", b"\n\n", 3))
    runs = iter(range(10_000))

    def prepare():
        # A fresh index folder per run: Chroma keeps a process-wide client per path.
        settings = settings_factory(data_dir=seeds_copy, index_dir=tmp_path / f"i{next(runs)}")
        if op != "index":
            pipe = _pipe(settings, hash_embedder)
            pipe.index()
            pipe.add_document("note.txt", NEW_TEXT.encode())
        return settings

    settings = prepare()
    baseline = snapshot(_pipe(settings, hash_embedder).store) if op != "index" else None
    probe = _run_killed(settings.index_dir, seeds_copy, op, 0, upload)
    assert probe.returncode == 0, probe.stderr[-2000:]
    total = int(probe.stdout.strip().splitlines()[-1].split("=")[1])
    expected = clean_build(settings_factory, hash_embedder, seeds_copy, tmp_path / "clean",
                           settings.index_dir / "uploads")
    # Every write point for a small run; a spread of them for a long one.
    points = range(1, total + 1) if total <= 12 else sorted(
        {1, 2, 3, total // 3, total // 2, total - 2, total - 1, total})
    for n in points:
        settings = prepare()
        uploads = settings.index_dir / "uploads"
        run = _run_killed(settings.index_dir, seeds_copy, op, n, upload)
        assert run.returncode == -9, (n, run.stderr[-2000:])
        pipe = _pipe(settings, hash_embedder)
        if op == "upload":
            # the previous note.txt (or the new one) is intact, never both, never neither
            assert (uploads / "note.txt").read_bytes() in (NEW_TEXT.encode(), upload.read_bytes())
            pipe.index(uploads)
        else:
            pipe.index()
        after = snapshot(pipe.store)
        assert consistent(after), n
        if op == "upload" and (uploads / "note.txt").read_bytes() == NEW_TEXT.encode():
            assert after == baseline, n  # killed before the file moved: the previous state
            continue
        assert after == expected, n
        # No leftovers but a rebuild's unfinished newer generation, which is never read (it
        # may belong to a rebuild running in another process) and the next rebuild drops.
        gen = int(pipe.store.version().split(":")[0])
        names = {c.name for c in pipe.store.client.list_collections()}
        rest = names - {"news-meta", f"news-g{gen}", f"news-g{gen}-docs"}
        assert all(int(x.split("-g")[1].split("-")[0]) > gen for x in rest), (n, names)
