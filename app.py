"""Start the chat UI: `python app.py [--host H] [--port P]` (defaults from settings)."""

from __future__ import annotations

import argparse
import logging
import sys

from rag.app.cli import configure_logging
from rag.app.net import check_port_free
from rag.app.ui import check_serving, launch
from rag.pipeline import build_pipeline
from rag.settings import load_settings
from rag.types import RagError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat with the indexed news articles.")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to serve on (default 7860)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow serving beyond this machine without a login")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO, "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own startup probes
    try:
        settings = load_settings(host=args.host, port=args.port)
        check_serving(settings, insecure=args.insecure)
        check_port_free(settings.host, settings.port)
        launch(build_pipeline(settings), settings)
    except RagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
