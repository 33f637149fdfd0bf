"""`python -m statemanager` is the same as the `statemanager` console script."""

from statemanager.cli import main

raise SystemExit(main())
