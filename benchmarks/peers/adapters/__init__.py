"""One adapter per library; each runs under that library's own virtualenv (see base.py)."""
