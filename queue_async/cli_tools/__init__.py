"""The admin subcommands of ``queue-async`` (``cli.py`` holds the parser and the worker).

Imported only when an admin subcommand runs, so that ``queue-async worker`` starts without
them. Like the rest of the CLI, these modules use the public API only (``import queue_async``).
"""
