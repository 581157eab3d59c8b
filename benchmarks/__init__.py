"""Sortie's benchmarks: programs run as modules from the repository root
(``.venv/bin/python -m benchmarks.NAME``), so that they import ``sortie`` and the test
harness (``tests.harness``, ``tests.sim``) the way the tests do, without editing ``sys.path``."""
