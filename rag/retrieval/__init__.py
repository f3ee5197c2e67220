"""Retrieval: dense and BM25 retrievers, fusion, hubness correction, near-duplicate collapsing."""
