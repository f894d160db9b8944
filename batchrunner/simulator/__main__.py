"""``python -m batchrunner.simulator``: serve until SIGINT or SIGTERM."""

from batchrunner.simulator.server import main

main()
