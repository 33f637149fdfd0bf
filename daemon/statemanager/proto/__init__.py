"""Generated gRPC stubs (grpcio-tools) for the services the daemon speaks; see generate.py."""
