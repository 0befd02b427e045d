"""One module per ``ferkit`` command: ``add_parser(subparsers)`` and ``run(args)``."""
