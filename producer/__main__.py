"""`python -m producer` is the `corral` command."""

from producer.cli import main

main()
