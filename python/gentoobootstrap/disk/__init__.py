"""The instance disk: its devices, layout, filesystems, mounts, and its export stream."""
