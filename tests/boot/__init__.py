"""Boot tests: build a test stage and kernel, boot what create makes under qemu."""
