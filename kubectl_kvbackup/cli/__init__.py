"""The ``kubectl kvbackup`` command line: one module per subcommand, shared flags in ``common``."""
