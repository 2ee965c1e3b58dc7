"""One module per command: read the options, call the library, print."""
