"""``python -m adapters LIB ROLE ...``: run one library's adapter (cwd: benchmarks/peers)."""

from __future__ import annotations

import importlib
import sys

from adapters.base import main

LIBRARIES = ("queue_async", "arq", "saq", "streaq", "taskiq")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in LIBRARIES:
        sys.exit(f"usage: python -m adapters {{{','.join(LIBRARIES)}}} ROLE ...")
    module = importlib.import_module(f"adapters.{sys.argv[1]}")
    main(module.ADAPTER, sys.argv[2:])
