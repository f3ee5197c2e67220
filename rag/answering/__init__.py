"""Answering: question analysis, evidence sentences, kinds of answer, refusal, citations,
prompts, and the answerer."""
