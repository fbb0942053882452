"""Install Gentoo Linux into Ganeti instances: the library behind the OS scripts."""

from gentoobootstrap.paths import VERSION as __version__

__all__ = ["__version__"]
