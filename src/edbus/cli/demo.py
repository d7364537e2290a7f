"""`edbus demo` (being written: replaced by the demo implementation)."""

import click


@click.command()
def demo() -> None:
    """Run the course catalog demo on the embedded store."""
    raise click.ClickException("demo not written yet")
