"""Routers of the web app, one per concern. Every router uses `GuardedRoute`."""
