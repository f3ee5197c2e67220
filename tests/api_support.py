"""Helpers for the API tests: a real uvicorn server in a background thread, and clients."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.ui_support import free_port

# Generous: a busy CI machine may be slow to start a server; nothing waits this long normally.
START_DEADLINE_S = 60.0


class ServerThread:
    """Serve an ASGI app on 127.0.0.1:<free port> until the with-block ends."""

    def __init__(self, app: Any, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + START_DEADLINE_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join()


def openai_client(url: str, key: str = "no-key"):
    """The real openai client, without automatic retries (a test must see each status)."""
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=600)
