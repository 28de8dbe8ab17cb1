"""``python -m shieldsplit.cli``: the ``shieldsplit`` command."""

from shieldsplit.cli import main

main()
