"""The search side of cellsearch; for now, the `cellsearch` command line (`search.cli`)."""
