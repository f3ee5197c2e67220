"""Checks before serving on a network address (the chat, the API, the MCP server)."""

from __future__ import annotations

import errno
import socket

from rag.types import RagError


def check_port_free(host: str, port: int) -> None:
    """Fail with one clear line, before minutes of indexing, when the address is taken (most
    often by a chat already running) rather than with Gradio's traceback after it."""
    if not port:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except OSError as e:
        raise RagError(f"Cannot serve on {host}: {e}.") from e
    with socket.socket(family, kind, proto) as probe:
        # As the server itself will: a port left in TIME_WAIT by a stopped chat is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise RagError(f"Cannot serve on {host}:{port}: {e.strerror or e}.") from e
            raise RagError(
                f"Port {port} on {host} is already in use; is the chat or another server "
                "already running there? Stop it, or choose another port with --port N.") from e
