"""Tenants: businesses on the platform, their members, API keys and lifecycle."""
