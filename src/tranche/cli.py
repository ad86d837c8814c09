"""The ``tranche`` command."""

from __future__ import annotations

import click

from tranche import __version__


@click.group()
@click.version_option(__version__, prog_name="tranche")
def main() -> None:
    """tranche: a marketplace engine where loan originators sell fractions of their loans to investors."""


@main.command()
def migrate() -> None:
    """Bring the database named by TRANCHE_DATABASE_URL to the newest schema."""
    from tranche.bootstrap import bootstrap

    container = bootstrap()
    container.close()
    click.echo("schema is up to date")
