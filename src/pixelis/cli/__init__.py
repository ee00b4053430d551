"""The ``pixelis`` command line: one sub-command per job; heavy libraries load only inside commands."""

from pixelis.cli import data, model, repro, tools
from pixelis.cli import trace
from pixelis.cli import analyze
from pixelis.cli import bench
from pixelis.cli import online
from pixelis.cli.common import command_group
from pixelis.cli.demo import demo
from pixelis.cli.eval import evaluate
from pixelis.cli.serve import serve
from pixelis.cli.train import train

app = command_group("Pixelis: train and serve pixel-space reasoning agents.")
app.command("demo")(demo)
app.add_typer(data.app, name="data")
app.add_typer(tools.app, name="tools")
app.add_typer(model.app, name="model")
app.command("eval")(evaluate)
app.command("train")(train)
app.add_typer(repro.app, name="repro")
app.add_typer(trace.app, name="trace")
app.add_typer(analyze.app, name="analyze")
app.add_typer(bench.app, name="bench")
app.add_typer(online.app, name="online")
app.command("serve")(serve)


def main() -> None:
    """Entry point of the ``pixelis`` script."""
    app()
