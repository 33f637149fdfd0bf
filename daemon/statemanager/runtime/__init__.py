"""The runtime: the controller, work queue, state writer, watcher, election, reconcile
sender, health and the metrics they record. Async code that drives the core against
the adapters' small interfaces (docs/decisions/layers.md)."""
