"""Compliance: the audit log, fraud screening and review, KYC records."""
