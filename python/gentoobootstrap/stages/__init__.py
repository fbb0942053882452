"""Stages and snapshots: downloaded, verified, cached and unpacked."""
