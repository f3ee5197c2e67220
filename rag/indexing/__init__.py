"""Indexing: reading articles (clean text, exact spans), chunking, and the incremental indexer."""
