"""`python -m piro_cli` runs the `piro` command line."""

from piro_cli.cli import main

main()
