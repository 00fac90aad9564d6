"""The HTTP edge: the proto's messages in canonical JSON, onto the use cases through ``messages``, and the page.

(``http_api``, not ``http``: stdlib's stays clear.)

app.py         create_app(cases, config, metrics) -> FastAPI: middleware, error handlers, the page
routes.py      the RPC routes under /v1/ (resources.py: pictures; docs_pages.py: /docs, /redoc)
calls.py       Calls: slots, the waiting room (429), the deadline header, the worker thread
bodies.py      bodies read under their limits and parsed (JSON, multipart, raw image)
middleware.py  the bearer token (``image2sdr.server.auth``), request metrics
errors.py      gRPC code -> HTTP status; failures answered as google.rpc.Status JSON
serving.py     HttpServer: uvicorn on its own thread, bound before start returns
static/        the page (index.html, app.js, style.css), served at / and /static/

It imports neither the gRPC edge nor the composition root (``serve.create_server``).
"""

from .app import create_app
from .serving import HttpServer

__all__ = ["HttpServer", "create_app"]
