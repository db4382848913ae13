"""`python -m loadtest.abuse`: see loadtest/abuse/cli.py."""

from loadtest.abuse.cli import main

main()
