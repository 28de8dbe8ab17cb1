"""The private core every layer shares: validation, the registry, provenance, atomic I/O,
progress bars and logging safety. Errors stay public in ``shieldsplit.errors``."""
