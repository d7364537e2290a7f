"""The edbus command line."""
