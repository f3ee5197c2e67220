"""Run one write operation in a subprocess and SIGKILL it at its n-th Chroma write.

    python -m tests.crash_helper INDEX_DIR DATA_DIR OP KILL_AT [UPLOAD_FILE]

OP: "index" (incremental), "rebuild", or "upload" (add UPLOAD_FILE through add_document).
The kill happens inside the write call, before it reaches Chroma: the closest thing to
pulling the plug at that point, and deterministic (no timers).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from rag.pipeline import build_pipeline
from rag.settings import load_settings
from rag.store import ChromaStore, make_client
from tests.conftest import HashEmbedder
from tests.fault_store import FaultPlan, FaultyClient


class KillPlan(FaultPlan):
    def check(self, what: str) -> None:
        self.writes += 1
        if self.fail_at is not None and self.writes == self.fail_at:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    index_dir, data_dir, op, kill_at = argv[:4]
    settings = load_settings(index_dir=Path(index_dir), data_dir=Path(data_dir),
                             mode="extractive")
    emb = HashEmbedder()
    plan = KillPlan(int(kill_at) or None)
    store = ChromaStore(FaultyClient(make_client(settings), plan), settings.collection, emb.id)
    pipe = build_pipeline(settings, embedder=emb, store=store)
    if op == "index":
        pipe.index()
    elif op == "rebuild":
        pipe.index(rebuild=True)
    elif op == "upload":
        f = Path(argv[4])
        res = pipe.add_document(f.name, f.read_bytes())
        print(res.message)
    print(f"writes={plan.writes}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
