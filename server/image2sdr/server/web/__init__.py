"""The HTTP edge: the gRPC servicer over HTTP/JSON, and the page (``web``, not ``http``: stdlib's stays clear).

app.py       create_app(servicer, config, metrics) -> FastAPI: routes, body limits, token, CORS
context.py   HttpContext: what the servicer uses of grpc.ServicerContext
errors.py    gRPC code -> HTTP status; failures answered as google.rpc.Status JSON
serving.py   HttpServer: uvicorn on its own thread, bound before start returns
static/      the page (index.html, app.js, style.css), served at / and /static/
"""

from .app import create_app
from .serving import HttpServer

__all__ = ["HttpServer", "create_app"]
