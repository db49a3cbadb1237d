"""Payments: the Daraja client, STK push, callbacks, reconciliation and the Daraja sandbox."""
