"""The ``pixelis`` command line: one sub-command per job; heavy libraries load only inside commands."""

from pixelis.cli import data, model, repro, tools
from pixelis.cli.common import command_group
from pixelis.cli.demo import demo
from pixelis.cli.eval import evaluate
from pixelis.cli.train import train

app = command_group("Pixelis: train and serve pixel-space reasoning agents.")
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
