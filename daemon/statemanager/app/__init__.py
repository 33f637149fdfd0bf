"""The application shell: configuration, logging, systemd, the HTTP server and status
page, the daemon's composition root and the command line (docs/decisions/layers.md)."""
