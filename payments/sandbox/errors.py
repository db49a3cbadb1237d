"""Daraja's synchronous error envelope, and the errors the sandbox answers with.

    {"requestId": "...", "errorCode": "NNN.NNN.NN", "errorMessage": "..."}

The HTTP status is always the first segment of errorCode (daraja.md §0), so an error is
described by its code and message alone.
"""

from __future__ import annotations

from flask import Response, jsonify

from payments.sandbox.identifiers import new_request_id


class DarajaError(Exception):
    """A refusal in Daraja's words. `request_id` defaults to a fresh Daraja-style id; the
    STK query's "being processed" answer uses the CheckoutRequestID instead."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.request_id = request_id

    @property
    def status(self) -> int:
        return int(self.code.split(".", 1)[0])

    def response(self) -> Response:
        response = jsonify(
            {
                "requestId": self.request_id or new_request_id(),
                "errorCode": self.code,
                "errorMessage": self.message,
            }
        )
        response.status_code = self.status
        return response


def bad_request(field: str) -> DarajaError:
    """Field validation, worded as Daraja words it: "Bad Request - Invalid <Field>"."""
    return DarajaError("400.002.02", f"Bad Request - Invalid {field}")


def invalid_payload() -> DarajaError:
    return DarajaError("400.002.05", "Invalid Request Payload")


def invalid_access_token() -> DarajaError:
    return DarajaError("404.001.03", "Invalid Access Token")


def resource_not_found() -> DarajaError:
    return DarajaError("404.001.01", "Resource not found")


def method_not_allowed() -> DarajaError:
    return DarajaError("405.001", "Method Not Allowed")


def wrong_credentials() -> DarajaError:
    return DarajaError("500.001.1001", "Wrong credentials")


def merchant_does_not_exist() -> DarajaError:
    return DarajaError("500.001.1001", "Merchant does not exist")


def subscriber_locked() -> DarajaError:
    return DarajaError(
        "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    )


def being_processed(checkout_request_id: str) -> DarajaError:
    return DarajaError(
        "500.001.1001", "The transaction is being processed", request_id=checkout_request_id
    )


def internal_error() -> DarajaError:
    return DarajaError("500.003.1001", "Internal Server Error")
