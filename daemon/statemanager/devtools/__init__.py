"""Development tools: the benchmark, its load generator, the local development etcd and
the sharding simulator. Outside the daemon's import graph: only the command line
loads them, inside the commands that use them (docs/decisions/layers.md)."""
