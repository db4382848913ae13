"""`python -m loadtest.peers install triton`: make a peer's virtualenv."""

from __future__ import annotations

import click

from loadtest.peers.runner import PEERS, install


@click.group()
def main() -> None:
    """Optional peers for `make bench` (see loadtest/peers/runner.py)."""


@main.command("install")
@click.argument("names", nargs=-1, type=click.Choice(sorted(PEERS)))
def install_cmd(names: tuple[str, ...]) -> None:
    """Create build/peers/<name> and install the peer's packages into it."""
    for name in names or tuple(PEERS):
        install(PEERS[name])
        click.echo(f"installed peer {name} in {PEERS[name].venv}")


if __name__ == "__main__":
    main()
