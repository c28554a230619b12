"""Optional integrations; each needs its extra (``pip install 'queue-async[<extra>]'``)."""
