"""The ``thinkgate`` command line (typer): serve, ingest, search, prepare, eval, train, demo-corpus.

Commands only dispatch to the packages that own the work (`api` serves, `retrieval` indexes,
`evals.modes` evaluates, `training` trains); `api/` itself never imports training or evaluation.
"""
