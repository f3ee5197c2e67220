"""Checks before serving on a network address (the chat, the API, the MCP server)."""

from __future__ import annotations

import errno
import socket

from rag.types import RagError


def check_port_free(host: str, port: int | None) -> None:
    """Fail with one clear line, before minutes of indexing, when the address is taken (most
    often by a chat already running) rather than with the server's traceback after it. Each
    address the host resolves to is tried as the server will bind it (reusable, IPv6 only on
    IPv6); only "in use" and errors on every address stop the start."""
    if not port:
        return  # the server picks a free one
    # As Gradio and uvicorn read it: no host is the loopback, brackets only delimit IPv6.
    name = host.strip("[]") or "127.0.0.1"
    try:
        addresses = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise RagError(f"Cannot serve on {host}: {e}. Check --host (a name or address of "
                       "this machine).") from e
    failures: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # A port left in TIME_WAIT by a stopped chat is free to the server.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise RagError(
                        f"Port {port} on {host or name} is already in use; is the chat or "
                        "another server already running there? Stop it, or choose another "
                        "port with --port N.") from e
                failures.append(e)
    if failures and len(failures) == len(addresses):
        e = failures[0]
        raise RagError(f"Cannot serve on {host or name}:{port}: {e.strerror or e}. Use an "
                       "address of this machine for --host (127.0.0.1 or 0.0.0.0) and a "
                       "port you may open (1024 or above).") from e
