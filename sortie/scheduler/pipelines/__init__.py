"""The pipeline controller: pure decision code (no I/O, clock or randomness)."""
