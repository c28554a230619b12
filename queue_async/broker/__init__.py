"""The Redis layer: connections, key names, wire formats, job records, the Lua scripts.

Imports only the leaves (exceptions, models, options, codec, identifiers); everything above
reaches Redis through it (the import contract in pyproject.toml holds this).
"""
