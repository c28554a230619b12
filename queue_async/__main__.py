"""``python -m queue_async``: the same as the ``queue-async`` command."""

import sys

from queue_async.cli import main

sys.exit(main())
