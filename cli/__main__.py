"""``python -m cli``: the ``thinkgate`` command."""
from cli.main import main

main()
