"""The files and manual pages generated from the declarations at build time."""
