"""The ``pixelis`` command line."""

import typer

from pixelis.cli import repro

app = typer.Typer(help="Pixelis: train and serve pixel-space reasoning agents.", no_args_is_help=True)
app.add_typer(repro.app, name="repro")


def main() -> None:
    """Entry point of the ``pixelis`` script."""
    app()
