"""The client library: the async client, snapshots, environments, provenance, the SDK and the
run context a training script imports."""
