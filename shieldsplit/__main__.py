"""``python -m shieldsplit`` runs the command line."""

from shieldsplit.cli import main

main()
