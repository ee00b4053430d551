"""`python -m pixelis.cli` (used by `accelerate launch -m pixelis.cli ...`)."""

from pixelis.cli import main

main()
