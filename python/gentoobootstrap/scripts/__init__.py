"""The programs: one module per OS script and command, and the install create and import share."""
