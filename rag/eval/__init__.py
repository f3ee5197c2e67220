"""Evaluation: question sets, metrics, `rag eval` runs, reports, and the naive llama-index
baseline."""
