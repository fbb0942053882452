"""The guest: its tree reached safely from the node, its configuration, and the hooks."""
