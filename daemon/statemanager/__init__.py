"""statemanager: keeps Pullpiri model and package states in etcd true to container states."""

__version__ = "0.2.0"  # semantic versioning: CHANGELOG.md
