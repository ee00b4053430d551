"""The ``pixelis`` command line: one sub-command per job; heavy libraries load only inside commands."""

import typer

from pixelis.cli import data, model, repro, tools
from pixelis.cli.demo import demo
from pixelis.cli.eval import evaluate
from pixelis.cli.train import train

app = typer.Typer(help="Pixelis: train and serve pixel-space reasoning agents.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.command("demo")(demo)
app.add_typer(data.app, name="data")
app.add_typer(tools.app, name="tools")
app.add_typer(model.app, name="model")
app.command("eval")(evaluate)
app.command("train")(train)
app.add_typer(repro.app, name="repro")


def main() -> None:
    """Entry point of the ``pixelis`` script."""
    app()
