"""mixopt serve: ask/tell over HTTP (see mixopt.serve.app)."""
