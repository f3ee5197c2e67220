"""newsrag: local multilingual question answering over news articles, with cited sources."""

__version__ = "0.1.0"
