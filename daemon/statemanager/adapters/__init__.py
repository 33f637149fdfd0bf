"""One adapter per outside system: etcd, ActionController (gRPC client) and the
StateManager gRPC service. They take plain values and their own small settings
types, never the application's configuration (docs/decisions/layers.md)."""
