"""Exit statuses of the `askdocs` command, shared by every subcommand."""

EXIT_OK = 0  # done, clean
EXIT_PARTIAL = 1  # done, but some pages failed (or another sync was running)
EXIT_CONFIG = 2  # configuration, connection or input error: nothing done
