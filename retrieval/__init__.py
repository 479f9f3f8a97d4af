"""Retrieval: document loaders, the chunker, the embedder, the FAISS index with its SQLite
chunk store, and the ingest/search CLI. Imports nothing from `policy`, `agent`, `api` or
`training`."""
