"""The pure core: container, model and package states, the rules, key layout, input
parsing, the index, the planner and reconcile triggers. Purely computational: no I/O,
no clock, no event loop; nothing of the package outside `statemanager.core` (checked
by the import contracts in pyproject.toml, docs/decisions/layers.md)."""
