"""Skeleton action recognition: the stages and commands run as `python -m pipeline.<name>`."""

import sys

# Run as `python -m pipeline.<command>` (sys.argv[0] is '-m' while Python finds the module):
# Ctrl-C or SIGTERM during the second of heavy imports before the command's main() starts
# ends in one line, not a KeyboardInterrupt traceback from inside an import.
if sys.argv[:1] == ["-m"]:
    from pipeline.core.errors import install_starting_handlers

    install_starting_handlers()
