"""The server's routes: searches, catalogue items, and the system endpoints (health, metrics,
the page). Each module holds one ``APIRouter``; :func:`~lookalike.serve.app.create_app`
includes them."""
