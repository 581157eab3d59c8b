"""The host daemon: heartbeats, snapshot and environment caches, executors, run reports.

Entry point: :func:`agents.daemon.run_agent`.
"""
