"""The magic test numbers: the phone number of a push picks what the "customer" does.

The table is conventions.md's "Daraja sandbox: magic test numbers"; result codes and
descriptions are Daraja's verbatim (daraja.md §3.3). Any number not listed succeeds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SUCCESS_DESCRIPTION = "The service request is processed successfully."


class Delivery(enum.StrEnum):
    """How the callback for an outcome is delivered."""

    ONCE = "once"  # after the callback delay
    TWICE = "twice"  # two identical copies, the second shortly after the first
    NEVER = "never"  # only an STK query tells the outcome
    LATE = "late"  # after the late-callback delay; the outcome is final on time


@dataclass(frozen=True)
class Outcome:
    result_code: int
    result_desc: str
    delivery: Delivery = Delivery.ONCE
    # Daraja refuses the push itself (HTTP 500 "Unable to lock subscriber…"); no callback.
    refused_at_once: bool = False

    @property
    def succeeded(self) -> bool:
        return self.result_code == 0


SUCCESS = Outcome(0, SUCCESS_DESCRIPTION)

MAGIC_NUMBERS: dict[str, Outcome] = {
    "254708374149": SUCCESS,
    "254700000001": Outcome(1, "The balance is insufficient for the transaction."),
    "254700001032": Outcome(1032, "Request cancelled by user"),
    "254700001037": Outcome(1037, "DS timeout user cannot be reached"),
    "254700001019": Outcome(1019, "Transaction has expired"),
    "254700002001": Outcome(2001, "The initiator information is invalid."),
    "254700001001": Outcome(
        1001,
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
        refused_at_once=True,
    ),
    "254700000099": Outcome(0, SUCCESS_DESCRIPTION, Delivery.NEVER),
    "254700000098": Outcome(0, SUCCESS_DESCRIPTION, Delivery.TWICE),
    "254700000097": Outcome(0, SUCCESS_DESCRIPTION, Delivery.LATE),
}


def outcome_for(msisdn: str) -> Outcome:
    """What happens to a push to `msisdn` (12 digits): its magic outcome, else success."""
    return MAGIC_NUMBERS.get(msisdn, SUCCESS)
