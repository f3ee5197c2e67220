"""The user-facing programs: the `rag` command and the Gradio chat."""
