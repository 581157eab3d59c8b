"""Bus plumbing: the floor between the wire contract (`sortie.proto`) and the daemons and
client library. Connecting, credentials, the embedded broker process, JetStream resources,
blobs, KV helpers, the metrics endpoint, the client profile and log set-up."""
