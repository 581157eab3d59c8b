"""What a view is: one module (its routes) and one template, registered in ``views/``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.routing import BaseRoute


@dataclass(frozen=True)
class View:
    name: str  # the module's name, and its template's (``templates/<name>.html``)
    routes: list[BaseRoute]
    title: str | None = None  # its link in the navigation bar (None: not in it)
    path: str = ""  # where that link goes
    scripts: list[str] = field(default_factory=list)  # its own ``static/`` scripts
