"""The ``ecanet`` command line: argument parsing only, one module per subcommand."""
