"""One module per command: read the options, call the library, print.

These modules do not use `from __future__ import annotations`: Typer reads every
command's signature at start-up, and real annotations spare it evaluating strings
(half of the app's build time). Names imported only for type checking are quoted.
"""
