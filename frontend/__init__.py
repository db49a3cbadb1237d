"""Server-rendered pages: the public site, the tenant dashboard, and the admin and compliance
consoles. Views are thin: they check who is asking, read a form, call a domain service and
render a template; the rules live in the services the API uses too.

Progressive enhancement: every page works as plain HTML forms; `static/lango.js` adds copy
buttons, confirmations and live updates (server-sent events). No CDN and no build step —
the CSS and JS are Lango's own, served from this package.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register every page blueprint, CSRF protection, template helpers and the HTML error
    pages."""
    # Imported when the app is built, not with the package: the pages load every domain.
    from core.errors import use_html_errors
    from frontend import admin, compliance, formatting, site, staff_login
    from frontend.auth import csrf
    from frontend.dashboard import bp as dashboard
    from frontend.errors import html_error_page

    # Flask-WTF checks tokens only where frontend.auth asks it to (page blueprints), so the
    # JSON API, which authenticates with bearer keys and never reads cookies, is unaffected.
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    csrf.init_app(app)
    formatting.register(app)
    for blueprint in (site.bp, staff_login.bp, dashboard, admin.bp, compliance.bp):
        app.register_blueprint(blueprint)
    use_html_errors(html_error_page)
