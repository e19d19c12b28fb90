"""The hello-JSON ceiling: a one-route Starlette app served exactly as `stateset-server serve` serves the API.

Same server (granian), interface (ASGI), factory loading, worker count, CPU pinning (as on the default
SQLite database), backlog and access-log setting as `stateset_server.cli.cmd_serve`, so the only
difference from the real server is the application itself.

    python bench/hello_app.py --port 8001 [--workers 1]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(_request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


def create_app() -> Starlette:
    """The factory each granian worker calls, as the real server's `app_from_environment`."""
    from stateset_server.affinity import pin_this_worker
    from stateset_server.app import hand_the_gil_over_sooner

    pin_this_worker()  # the real server's worker settings
    hand_the_gil_over_sooner()
    return Starlette(routes=[Route("/", hello)])


def serve(host: str, port: int, workers: int) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    from stateset_server.affinity import tell_workers
    from stateset_server.cli import GRANIAN_SETTINGS  # the real server's own settings
    from stateset_server.settings import DEFAULT_DATABASE_URL

    tell_workers(workers, DEFAULT_DATABASE_URL)  # pinned as `serve` pins them on its default database

    # Keep the other arguments in step with stateset_server.cli.cmd_serve.
    Granian(
        "hello_app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        **GRANIAN_SETTINGS,
    ).serve()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
