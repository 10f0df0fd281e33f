"""mlops: take trained scikit-learn models through their life in production, on local files only."""

__version__ = "0.1.0"


def main() -> None:
    """The `mlops` console script. Ctrl-C while the CLI is still importing is exit 130, like any interruption (a
    traceback and exit 1 would read as a negative verdict to a script)."""
    import sys

    try:
        from mlops_cli.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted by SIGINT (nothing was done)\n")
        sys.exit(130)
    run()
