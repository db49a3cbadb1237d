"""Billing: plans, subscriptions, quota, usage metering, invoices and Stripe."""
