"""Configuration: the settings, their files, the OS parameters and the OS environment."""
