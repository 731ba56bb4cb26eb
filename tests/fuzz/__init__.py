"""Fuzz targets: every input an outsider (or a broken peer) can hand the server gets a defined
outcome.  ``targets.TARGETS`` lists them; ``test_targets.py`` runs each for a small, fixed budget
in the suite, and ``benchmarks/fuzz_run.py`` for 10,000 cases or more."""
