"""The command line: version, help, and honest refusal of what is not built yet."""

from typer.testing import CliRunner

from gridbid import __version__
from gridbid.cli import app

runner = CliRunner()


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"gridbid {__version__}"


def test_help_lists_the_subcommands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "compare", "serve", "admin", "agent", "pilot-demo"):
        assert command in result.output
