"""``python -m benchmarks --quick | --full``: see :mod:`benchmarks.run`."""

from benchmarks.run import main

main()
