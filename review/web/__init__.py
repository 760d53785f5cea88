"""The web service: FastAPI app, guarded routes, server-rendered pages."""
