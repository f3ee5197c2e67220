"""Chat-model backends (Ollama, OpenAI-compatible, llama.cpp) and the packaged GGUF."""
