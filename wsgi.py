"""The one entry point for gunicorn and flask: `gunicorn wsgi:app`."""

from core import create_app

app = create_app()
