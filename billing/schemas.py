"""Request and response schemas for billing."""
