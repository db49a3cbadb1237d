"""Webhooks: endpoints, signed event delivery with retries and replay, SSRF-safe sending."""
