"""Running RQ jobs inside the application.

`lango worker` and `lango scheduler` run inside an app context; a job may also run where
there is none (a test calling it directly with an app pushed). `app_job` makes sure each job
runs in an app context and leaves no session or transaction behind for the next job.
"""

from __future__ import annotations

from functools import wraps

from flask import has_app_context


def app_job(func):
    @wraps(func)
    def run(*args, **kwargs):
        from core.extensions import db

        if not has_app_context():
            from core import create_app

            with create_app().app_context():
                return run(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        finally:
            db.session.remove()

    return run
