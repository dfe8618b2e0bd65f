"""One module per ``mmrec`` subcommand; each exposes ``register(subparsers)``."""
