"""One module per ``clipasso`` subcommand, each with ``add_arguments(parser)`` and ``run(args)``.

Subcommand modules import torch (and the engine) inside ``run`` only, so that ``clipasso --help``
answers at once.
"""
