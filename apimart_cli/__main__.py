"""The `apimart` command and `python -m apimart_cli`.

`--version` is answered before the app (and Typer) is loaded; everything else
runs the app in `cli.py`.
"""

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from apimart_cli import __version__

        print(f"apimart {__version__}")
        return
    from apimart_cli.cli import main as run_app

    run_app()


if __name__ == "__main__":
    main()
