"""`python -m benchmarks` runs every benchmark and writes benchmarks/RESULTS.md."""

from benchmarks.run_all import main

main()
