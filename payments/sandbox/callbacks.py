"""STK callbacks: Daraja's exact body, and a background thread that POSTs each one when due.

Due callbacks live in a Redis sorted set (store.py), not in process memory, so a callback
scheduled by one worker can be sent by any other, and one scheduled before a restart is sent
after it. Each is claimed atomically, so it goes out once (twice for the duplicate number,
which schedules two copies). Failures are logged and recorded, never retried: Daraja does
not retry (daraja.md §5.3).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import requests
from redis.exceptions import ConnectionError as RedisConnectionError

from payments.sandbox.store import SandboxStore

logger = logging.getLogger("lango.sandbox.callbacks")

# A receiver has this long to answer (Daraja's own timeout is not published).
CALLBACK_TIMEOUT_SECONDS = 10.0
# How often an idle dispatcher looks for callbacks another process scheduled; its own are
# sent on time because scheduling one wakes it.
POLL_SECONDS = 0.5


def callback_body(push: dict) -> dict:
    """The JSON Daraja POSTs to CallBackURL (daraja.md §3.1): ResultCode a number,
    CallbackMetadata only on success, items in Daraja's order, Balance without a Value."""
    callback = {
        "MerchantRequestID": push["merchant_request_id"],
        "CheckoutRequestID": push["checkout_request_id"],
        "ResultCode": push["result_code"],
        "ResultDesc": push["result_desc"],
    }
    if push["result_code"] == 0:
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": push["amount"]},
                {"Name": "MpesaReceiptNumber", "Value": push["mpesa_receipt_number"]},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": push["transaction_date"]},
                {"Name": "PhoneNumber", "Value": int(push["phone_number"])},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def deliver_callback(store: SandboxStore, checkout_request_id: str, copy: int) -> dict | None:
    """POST one callback copy and record the attempt; returns the attempt (None when the
    push is gone, e.g. its keys were deleted). Never raises for the receiver's failures."""
    push = store.load_push(checkout_request_id)
    if push is None:
        return None
    started = time.monotonic()
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    attempt = {"copy": copy, "at": at}
    try:
        with requests.Session() as session:
            # Straight to the receiver, as Daraja would: no proxy from the environment.
            session.trust_env = False
            response = session.post(
                push["callback_url"],
                json=callback_body(push),
                timeout=CALLBACK_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        attempt["status"] = response.status_code
    except requests.RequestException as exc:
        attempt["error"] = f"{type(exc).__name__}: {exc}"
    attempt["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    if attempt.get("error") or not 200 <= attempt["status"] < 300:
        logger.warning(
            "stk callback not accepted",
            extra={"checkout_request_id": checkout_request_id, **attempt},
        )
    store.record_attempt(checkout_request_id, attempt)
    return attempt


class CallbackDispatcher:
    """One thread per process that sends callbacks as they fall due.

    `ensure_running()` is cheap and fork-aware (a thread does not survive fork, so a
    gunicorn worker starts its own); `wake()` makes it re-read the schedule at once;
    `stop()` ends the thread and waits for callbacks in flight."""

    def __init__(self, store: SandboxStore, workers: int = 8):
        self.store = store
        self.workers = workers
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def ensure_running(self) -> None:
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="sandbox-callbacks", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self, timeout: float = 15.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
            self._wakeup.set()
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    def _run(self) -> None:
        redis_down = False
        with ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox-callback") as pool:
            while not self._stopping.is_set():
                self._wakeup.clear()
                try:
                    for checkout_request_id, copy in self.store.claim_due_callbacks(time.time()):
                        pool.submit(self._deliver, checkout_request_id, copy)
                    wait = self._seconds_until_next()
                    if redis_down:
                        logger.warning("callback schedule readable again")
                    redis_down = False
                except RedisConnectionError as exc:
                    # Redis down or restarting: keep the thread, say so once, retry shortly.
                    if not redis_down:
                        logger.warning("callback schedule unreadable, retrying: %s", exc)
                    redis_down, wait = True, 1.0
                except Exception:
                    logger.exception("callback schedule unreadable; retrying")
                    wait = 1.0
                self._wakeup.wait(wait)

    def _seconds_until_next(self) -> float:
        due = self.store.next_callback_due()
        if due is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, due - time.time()))

    def _deliver(self, checkout_request_id: str, copy: int) -> None:
        try:
            deliver_callback(self.store, checkout_request_id, copy)
        except Exception:
            logger.exception(
                "stk callback failed", extra={"checkout_request_id": checkout_request_id}
            )
