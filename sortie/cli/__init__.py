"""The `sortie` command."""
