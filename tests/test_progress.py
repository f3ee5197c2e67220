"""Progress lines with rate and time left (the app's log and upload status)."""

from __future__ import annotations

from rag.indexing.indexer import RateMeter, _embed


def test_rate_meter_reports_rate_and_time_left_from_a_clock():
    now = [100.0]
    meter = RateMeter("files", clock=lambda: now[0])
    assert meter.line(0, 1000) == "0/1000 files"  # no rate before anything is done
    now[0] += 50
    assert meter.line(100, 1000) == "100/1000 files, 2.00 files/s, about 8 min left"
    now[0] += 400
    assert meter.line(999, 1000) == "999/1000 files, 2.22 files/s, about 0 s left"


def test_embedding_reports_progress_per_batch(hash_embedder):
    seen = []
    vecs = _embed(hash_embedder, [f"text {i}" for i in range(70)], 32,
                  lambda done, total: seen.append((done, total)))
    assert vecs.shape[0] == 70
    assert seen == [(32, 70), (64, 70), (70, 70)]
