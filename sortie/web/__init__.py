"""The dashboard: an ASGI app (Starlette on uvicorn) that is a broker client like the CLI.

It reads the runs bucket, the logs and metrics streams and sends API requests with a client's
credentials; it never runs inside the scheduler (`sortie up` starts it as a child process,
`sortie web` alone), so any number of browsers cost the scheduler nothing. Pages are rendered
on the server (Jinja2) and kept live by server-sent events fed from the broker; the front end's
assets are vendored under ``static/`` (no CDN, no build step).
"""
