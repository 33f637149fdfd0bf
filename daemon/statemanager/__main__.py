"""`python -m statemanager` is the same as the `statemanager` console script."""

from statemanager.app.cli import main

raise SystemExit(main())
