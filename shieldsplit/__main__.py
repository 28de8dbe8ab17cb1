"""``python -m shieldsplit`` runs the command line."""

from .cli import main

main()
