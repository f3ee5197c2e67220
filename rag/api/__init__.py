"""Doors for other programs: an OpenAI-compatible HTTP API and an MCP server.

`openai_compat` translates between OpenAI's chat-completion shapes and the pipeline's typed
records (pure functions, no HTTP); `http` serves it (FastAPI: auth, limits, busy handling, SSE);
`mcp_server` exposes the same pipeline as MCP tools and resources. None of them retrieves or
prompts anything itself: every answer comes from the Pipeline.
"""
