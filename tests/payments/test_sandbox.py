"""The Daraja sandbox: Daraja's responses, errors and callbacks, byte for byte where it matters.

Request/response fidelity goes through Flask's test client; callbacks, the third-party
client flow and multi-process behaviour go through a really served sandbox and a really
served receiver. Every test gets its own Redis key prefix (in a Redis database of its own)
and deletes its keys afterwards.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from redis import Redis
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from payments.sandbox import create_sandbox_app
from payments.sandbox.config import (
    PUBLIC_SANDBOX_PASSKEY,
    SandboxConfigError,
    load_sandbox_config,
)
from payments.sandbox.identifiers import EAT, checkout_request_id, receipt_number
from payments.sandbox.store import SandboxStore

KEY, SECRET = "lango_sandbox_key", "lango_sandbox_secret"
SHORTCODE = "174379"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
OAUTH = "/oauth/v1/generate?grant_type=client_credentials"
DELAY = 0.2
SUCCESS_DESC = "The service request is processed successfully."
LOCKED = "Unable to lock subscriber, a transaction is already in process for the current subscriber"
MERCHANT_REQUEST_ID = re.compile(r"[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\d{4,7}")
RECEIPT = re.compile(r"[A-Z][A-L][1-9A-V][0-9A-Z]{7}")
REQUEST_ID = MERCHANT_REQUEST_ID


# Fixtures -------------------------------------------------------------------------------


def _own_database(url: str, db: int = 9) -> str:
    """The same Redis server, another database: the platform tests flush theirs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":  # unix:///path/redis.sock?db=N (urlunsplit would drop "//")
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return f"unix://{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture
def make_sandbox(redis_url) -> Iterator:
    """Builds sandbox apps sharing one fresh key prefix (as worker processes of one sandbox
    would); stops their callback threads and deletes their keys afterwards."""
    prefix = f"sandbox:test-{secrets.token_hex(4)}:"
    apps = []

    def make(**overrides):
        config = {
            "SANDBOX_REDIS_URL": _own_database(redis_url),
            "SANDBOX_KEY_PREFIX": prefix,
            "SANDBOX_CALLBACK_DELAY_SECONDS": DELAY,
            "SANDBOX_LATE_CALLBACK_SECONDS": 1.0,
            **overrides,
        }
        app = create_sandbox_app(config)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["lango.sandbox"].dispatcher.stop()
    SandboxStore(Redis.from_url(_own_database(redis_url)), prefix).clear()


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox()


@pytest.fixture
def daraja(sandbox) -> DarajaTestClient:
    return DarajaTestClient(sandbox.test_client())


class Served:
    """A WSGI app on 127.0.0.1:<free port> in a thread, as a real process would serve it."""

    def __init__(self, wsgi_app):
        self.server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def serve() -> Iterator:
    served: list[Served] = []

    def start(wsgi_app) -> str:
        served.append(Served(wsgi_app))
        return served[-1].url

    yield start
    for server in served:
        server.stop()


class CallbackReceiver:
    """Collects what the sandbox POSTs, answering `status` (200 unless told otherwise)."""

    def __init__(self, status: int = 200):
        self.status = status
        self.calls: list[dict] = []
        self._changed = threading.Condition()

    def __call__(self, environ, start_response):
        request = Request(environ)
        call = {
            "path": request.path,
            "content_type": request.content_type,
            "raw": request.get_data(as_text=True),
        }
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        response = Response(
            json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"}),
            status=self.status,
            content_type="application/json",
        )
        return response(environ, start_response)

    def bodies(self, checkout_request_id: str | None = None) -> list[dict]:
        with self._changed:
            bodies = [json.loads(call["raw"]) for call in self.calls]
        if checkout_request_id is None:
            return bodies
        return [
            body
            for body in bodies
            if body["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_request_id
        ]

    def wait_for(self, checkout_request_id: str, count: int = 1, timeout: float = 15) -> list:
        with self._changed:
            self._changed.wait_for(lambda: len(self.bodies(checkout_request_id)) >= count, timeout)
        return self.bodies(checkout_request_id)


@pytest.fixture
def receiver(serve) -> CallbackReceiver:
    receiver = CallbackReceiver()
    receiver.url = serve(receiver)
    return receiver


# Daraja request helpers -----------------------------------------------------------------


def timestamp_now() -> str:
    return datetime.now(EAT).strftime("%Y%m%d%H%M%S")


def password(timestamp: str, shortcode: str = SHORTCODE, passkey: str = PUBLIC_SANDBOX_PASSKEY):
    """As every SDK builds it: base64 of shortcode + passkey + timestamp."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def basic(key: str = KEY, secret: str = SECRET) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def random_phone() -> str:
    # Outside the magic 25470000xxxx range.
    return "2547" + str(secrets.randbelow(10**8)).zfill(8).replace("0000", "1111", 1)


def push_body(phone: str | None = None, callback_url: str = "http://127.0.0.1:9/cb", **extra):
    phone = phone or random_phone()
    timestamp = timestamp_now()
    return {
        "BusinessShortCode": int(SHORTCODE),
        "Password": password(timestamp),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 1,
        "PartyA": int(phone),
        "PartyB": int(SHORTCODE),
        "PhoneNumber": int(phone),
        "CallBackURL": callback_url,
        "AccountReference": "INV0001",
        "TransactionDesc": "Payment",
        **extra,
    }


def query_body(checkout_request_id: str) -> dict:
    timestamp = timestamp_now()
    return {
        "BusinessShortCode": SHORTCODE,
        "Password": password(timestamp),
        "Timestamp": timestamp,
        "CheckoutRequestID": checkout_request_id,
    }


class DarajaTestClient:
    """Flask's test client plus a token, speaking Daraja."""

    def __init__(self, client):
        self.client = client
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.client.get(OAUTH, headers=basic()).get_json()["access_token"]
        return self._token

    def bearer(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def push(self, body: dict):
        return self.client.post(PUSH, json=body, headers=self.bearer())

    def query(self, checkout_request_id: str):
        return self.client.post(QUERY, json=query_body(checkout_request_id), headers=self.bearer())

    def query_until_final(self, checkout_request_id: str, timeout: float = 15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.query(checkout_request_id)
            if response.status_code != 500:
                return response
            time.sleep(0.05)
        raise AssertionError(f"{checkout_request_id} still being processed after {timeout} s")


def assert_daraja_error(response, status: int, code: str, message: str) -> None:
    body = response.get_json()
    assert response.status_code == status, body
    assert list(body) == ["requestId", "errorCode", "errorMessage"]
    assert (body["errorCode"], body["errorMessage"]) == (code, message)
    assert int(code.split(".")[0]) == status
    assert REQUEST_ID.fullmatch(body["requestId"])


# OAuth ----------------------------------------------------------------------------------


def test_oauth_issues_a_28_character_token_with_expires_in_as_a_string(sandbox):
    response = sandbox.test_client().get(OAUTH, headers=basic())

    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["access_token", "expires_in"]
    assert re.fullmatch(r"[A-Za-z0-9]{28}", body["access_token"])
    assert body["expires_in"] == "3599"


def test_oauth_expires_in_can_be_a_number(make_sandbox):
    app = make_sandbox(SANDBOX_EXPIRES_IN_AS_NUMBER="true")
    assert app.test_client().get(OAUTH, headers=basic()).get_json()["expires_in"] == 3599


def test_tokens_live_an_hour_and_a_new_one_leaves_older_ones_valid(sandbox):
    client = sandbox.test_client()
    first, second = (
        client.get(OAUTH, headers=basic()).get_json()["access_token"] for _ in range(2)
    )
    store = sandbox.extensions["lango.sandbox"].store

    assert first != second
    assert 3590 <= store.redis.ttl(store.prefix + "token:" + first) <= 3600
    for token in (first, second):
        response = client.post(
            QUERY, json=query_body("ws_CO_x"), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.get_json()["errorMessage"] == "Bad Request - Invalid CheckoutRequestID"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic"},
        {"Authorization": "Digest x"},
    ],
)
def test_oauth_without_basic_auth_is_an_invalid_authentication_type(sandbox, headers):
    response = sandbox.test_client().get(OAUTH, headers=headers)
    assert_daraja_error(response, 400, "400.008.01", "Invalid authentication type passed")


@pytest.mark.parametrize(
    "query", ["", "?grant_type=password", "?grant_type=client_credentials%20", "?grant_type="]
)
def test_oauth_with_another_grant_type_is_refused(sandbox, query):
    response = sandbox.test_client().get("/oauth/v1/generate" + query, headers=basic())
    assert_daraja_error(response, 400, "400.008.02", "Invalid grant type passed")


@pytest.mark.parametrize(
    "authorization",
    [
        basic(SECRET, KEY)["Authorization"],
        basic(KEY, SECRET + "x")["Authorization"],
        basic("someone", SECRET)["Authorization"],
        "Basic not-base64!",
        "Basic " + base64.b64encode(KEY.encode()).decode(),  # no colon, no secret
    ],
)
def test_oauth_with_wrong_credentials_is_400_with_an_empty_body(sandbox, authorization):
    response = sandbox.test_client().get(OAUTH, headers={"Authorization": authorization})

    assert response.status_code == 400
    assert response.get_data() == b""


# STK push: authentication, transport and validation ---------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrongtoken0000000000000000", "Basic " + "x" * 28],
)
def test_push_without_a_valid_token_is_404_invalid_access_token(sandbox, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = sandbox.test_client().post(PUSH, json=push_body(), headers=headers)
    assert_daraja_error(response, 404, "404.001.03", "Invalid Access Token")


def test_push_with_get_is_405(daraja):
    response = daraja.client.get(PUSH, headers=daraja.bearer())
    assert_daraja_error(response, 405, "405.001", "Method Not Allowed")


def test_push_without_json_content_type_is_the_invalid_shortcode_quirk(daraja):
    # What `requests.post(url, data=json.dumps(body))` sends: no JSON content type.
    response = daraja.client.post(
        PUSH,
        data=json.dumps(push_body()),
        headers={**daraja.bearer(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_daraja_error(response, 400, "400.002.02", "Bad Request - Invalid BusinessShortCode")


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "null", '"text"'])
def test_push_with_a_malformed_body_is_invalid_request_payload(daraja, raw):
    response = daraja.client.post(
        PUSH, data=raw, content_type="application/json", headers=daraja.bearer()
    )
    assert_daraja_error(response, 400, "400.002.05", "Invalid Request Payload")


@pytest.mark.parametrize(
    ("field", "value", "invalid"),
    [
        ("BusinessShortCode", "1234", "BusinessShortCode"),
        ("BusinessShortCode", "17437900", "BusinessShortCode"),
        ("BusinessShortCode", None, "BusinessShortCode"),
        ("Password", "", "Password"),
        ("Timestamp", "2024-07-04 15:15:23", "Timestamp"),
        ("Timestamp", "20241332151523", "Timestamp"),
        ("Timestamp", "2024070415152", "Timestamp"),
        ("TransactionType", "CustomerPayBill", "TransactionType"),
        ("Amount", 10.5, "Amount"),
        ("Amount", "10.5", "Amount"),
        ("Amount", 1.0, "Amount"),
        ("Amount", 0, "Amount"),
        ("Amount", -5, "Amount"),
        ("Amount", True, "Amount"),
        ("Amount", None, "Amount"),
        ("Amount", 250_001, "Amount"),
        ("PartyA", "0708374149", "PartyA"),
        ("PartyB", "17437A", "PartyB"),
        ("PhoneNumber", "0708374149", "PhoneNumber"),
        ("PhoneNumber", "255708374149", "PhoneNumber"),
        ("PhoneNumber", "2547083741490", "PhoneNumber"),
        ("PhoneNumber", "254208374149", "PhoneNumber"),
        ("PhoneNumber", "+254708374149", "PhoneNumber"),
        ("PhoneNumber", "254708374149\n", "PhoneNumber"),
        ("CallBackURL", "ftp://example.com/cb", "CallBackURL"),
        ("CallBackURL", "https://example.com/c b", "CallBackURL"),
        ("CallBackURL", " https://example.com/cb", "CallBackURL"),
        ("CallBackURL", "example.com/cb", "CallBackURL"),
        ("CallBackURL", None, "CallBackURL"),
        ("AccountReference", "A" * 13, "AccountReference"),
        ("AccountReference", "", "AccountReference"),
        ("TransactionDesc", "D" * 14, "TransactionDesc"),
    ],
)
def test_push_field_errors_name_the_field(daraja, field, value, invalid):
    body = push_body()
    if value is None:
        del body[field]
    else:
        body[field] = value
    response = daraja.push(body)
    assert_daraja_error(response, 400, "400.002.02", f"Bad Request - Invalid {invalid}")


def test_push_with_a_wrong_password_is_500_wrong_credentials(daraja):
    body = push_body()
    wrong_passkey = push_body(Password=password(body["Timestamp"], passkey="0" * 64))
    other_timestamp = push_body(Password=password("20240704151523"))

    for bad in (wrong_passkey, other_timestamp, push_body(Password="not base64 at all")):
        assert_daraja_error(daraja.push(bad), 500, "500.001.1001", "Wrong credentials")


def test_push_to_an_unknown_shortcode_is_merchant_does_not_exist(daraja):
    timestamp = timestamp_now()
    body = push_body(
        BusinessShortCode="600000", Password=password(timestamp, "600000"), Timestamp=timestamp
    )
    assert_daraja_error(daraja.push(body), 500, "500.001.1001", "Merchant does not exist")


@pytest.mark.parametrize(
    "callback_url",
    ["http://localhost:8000/cb", "http://127.0.0.1/cb?x=1", "https://example.com/mpesa"],
)
def test_local_and_public_callback_urls_are_accepted(daraja, callback_url):
    assert daraja.push(push_body(callback_url=callback_url)).status_code == 200


def test_transaction_desc_is_optional(daraja):
    body = push_body()
    del body["TransactionDesc"]
    assert daraja.push(body).status_code == 200


def test_accepted_push_answers_with_daraja_ids(daraja):
    before = datetime.now(EAT)
    response = daraja.push(push_body("254708374149", TransactionType="CustomerBuyGoodsOnline"))

    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == [
        "MerchantRequestID",
        "CheckoutRequestID",
        "ResponseCode",
        "ResponseDescription",
        "CustomerMessage",
    ]
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CustomerMessage"] == "Success. Request accepted for processing"
    assert MERCHANT_REQUEST_ID.fullmatch(body["MerchantRequestID"])
    match = re.fullmatch(r"ws_CO_(\d{17})(\d{9})", body["CheckoutRequestID"])
    assert match and match.group(2) == "708374149"
    accepted = datetime.strptime(match.group(1)[:14], "%d%m%Y%H%M%S").replace(tzinfo=EAT)
    assert abs((accepted - before).total_seconds()) < 120  # EAT, not UTC


# Outcomes and callbacks -----------------------------------------------------------------


@pytest.fixture
def served_sandbox(sandbox, serve) -> str:
    return serve(sandbox)


def http_token(base_url: str) -> str:
    response = requests.get(
        f"{base_url}/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(KEY, SECRET),
        timeout=10,
    )
    return response.json()["access_token"]


def http_push(base_url: str, token: str, body: dict) -> requests.Response:
    return requests.post(
        f"{base_url}{PUSH}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def http_query_until_final(base_url: str, token: str, checkout_request_id: str) -> dict:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        response = requests.post(
            f"{base_url}{QUERY}",
            json=query_body(checkout_request_id),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        if response.status_code == 200:
            return response.json()
        assert response.json()["errorMessage"] == "The transaction is being processed"
        time.sleep(0.05)
    raise AssertionError(f"{checkout_request_id} still being processed")


@pytest.mark.parametrize(
    ("phone", "result_code", "result_desc"),
    [
        ("254700000001", 1, "The balance is insufficient for the transaction."),
        ("254700001032", 1032, "Request cancelled by user"),
        ("254700001037", 1037, "DS timeout user cannot be reached"),
        ("254700001019", 1019, "Transaction has expired"),
        ("254700002001", 2001, "The initiator information is invalid."),
    ],
)
def test_failure_numbers_call_back_with_their_result_code_and_no_metadata(
    served_sandbox, receiver, phone, result_code, result_desc
):
    token = http_token(served_sandbox)
    accepted = http_push(served_sandbox, token, push_body(phone, f"{receiver.url}/cb")).json()

    [body] = receiver.wait_for(accepted["CheckoutRequestID"])

    assert body == {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": accepted["MerchantRequestID"],
                "CheckoutRequestID": accepted["CheckoutRequestID"],
                "ResultCode": result_code,
                "ResultDesc": result_desc,
            }
        }
    }
    final = http_query_until_final(served_sandbox, token, accepted["CheckoutRequestID"])
    assert (final["ResultCode"], final["ResultDesc"]) == (str(result_code), result_desc)


@pytest.mark.parametrize("phone", ["254708374149", None])  # the test number, and any other
def test_success_calls_back_with_daraja_metadata(served_sandbox, receiver, phone):
    token = http_token(served_sandbox)
    body = push_body(phone, f"{receiver.url}/cb/secret-token", Amount="150")
    accepted = http_push(served_sandbox, token, body).json()

    [callback] = receiver.wait_for(accepted["CheckoutRequestID"])

    stk = callback["Body"]["stkCallback"]
    assert list(stk) == [
        "MerchantRequestID",
        "CheckoutRequestID",
        "ResultCode",
        "ResultDesc",
        "CallbackMetadata",
    ]
    assert (stk["ResultCode"], stk["ResultDesc"]) == (0, SUCCESS_DESC)
    items = stk["CallbackMetadata"]["Item"]
    assert [item["Name"] for item in items] == [
        "Amount",
        "MpesaReceiptNumber",
        "Balance",
        "TransactionDate",
        "PhoneNumber",
    ]
    amount, receipt, balance, date, phone_item = items
    assert amount == {"Name": "Amount", "Value": 150}
    assert balance == {"Name": "Balance"}  # present, without a Value, as Daraja sends it
    assert phone_item == {"Name": "PhoneNumber", "Value": body["PhoneNumber"]}
    assert isinstance(date["Value"], int)
    paid = datetime.strptime(str(date["Value"]), "%Y%m%d%H%M%S")
    assert RECEIPT.fullmatch(receipt["Value"])
    assert receipt["Value"][:3] == receipt_number(paid.replace(tzinfo=EAT))[:3]
    assert receiver.calls[0]["path"] == "/cb/secret-token"
    assert receiver.calls[0]["content_type"] == "application/json"


def test_duplicate_number_delivers_two_identical_callbacks(served_sandbox, receiver):
    token = http_token(served_sandbox)
    accepted = http_push(served_sandbox, token, push_body("254700000098", receiver.url)).json()

    first, second = receiver.wait_for(accepted["CheckoutRequestID"], count=2)

    assert first == second
    assert first["Body"]["stkCallback"]["ResultCode"] == 0


def test_no_callback_number_is_told_only_by_the_query(served_sandbox, receiver):
    token = http_token(served_sandbox)
    accepted = http_push(served_sandbox, token, push_body("254700000099", receiver.url)).json()

    final = http_query_until_final(served_sandbox, token, accepted["CheckoutRequestID"])
    time.sleep(1.0)  # well past the moment any callback would have gone out

    assert (final["ResultCode"], final["ResultDesc"]) == ("0", SUCCESS_DESC)
    assert receiver.bodies() == []
    shown = requests.get(
        f"{served_sandbox}/sandbox/stk-pushes/{accepted['CheckoutRequestID']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert (shown["callbacks_scheduled"], shown["callback_attempts"]) == ([], [])


def test_late_number_is_final_on_time_and_calls_back_late(make_sandbox, serve, receiver):
    base_url = serve(make_sandbox(SANDBOX_LATE_CALLBACK_SECONDS=3.0))
    token = http_token(base_url)
    accepted = http_push(base_url, token, push_body("254700000097", receiver.url)).json()

    final = http_query_until_final(base_url, token, accepted["CheckoutRequestID"])
    callbacks_when_final = receiver.bodies()
    [callback] = receiver.wait_for(accepted["CheckoutRequestID"])

    assert final["ResultCode"] == "0"
    assert callbacks_when_final == []  # the outcome was known ~3 s before the callback
    assert callback["Body"]["stkCallback"]["ResultCode"] == 0


def test_query_is_pending_then_final(make_sandbox):
    daraja = DarajaTestClient(make_sandbox(SANDBOX_CALLBACK_DELAY_SECONDS=2.0).test_client())
    accepted = daraja.push(push_body("254700001032")).get_json()

    pending = daraja.query(accepted["CheckoutRequestID"])
    final = daraja.query_until_final(accepted["CheckoutRequestID"])

    assert pending.status_code == 500
    assert pending.get_json() == {
        "requestId": accepted["CheckoutRequestID"],
        "errorCode": "500.001.1001",
        "errorMessage": "The transaction is being processed",
    }
    assert final.status_code == 200
    assert final.get_json() == {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": accepted["MerchantRequestID"],
        "CheckoutRequestID": accepted["CheckoutRequestID"],
        "ResultCode": "1032",
        "ResultDesc": "Request cancelled by user",
    }


def test_query_checks_token_password_and_checkout_id(daraja):
    accepted = daraja.push(push_body()).get_json()
    body = query_body(accepted["CheckoutRequestID"])

    no_token = daraja.client.post(QUERY, json=body)
    wrong_password = daraja.client.post(
        QUERY, json={**body, "Password": password("20200101000000")}, headers=daraja.bearer()
    )
    unknown = daraja.query("ws_CO_01012024000000000708374149")
    missing = daraja.client.post(
        QUERY,
        json={k: v for k, v in body.items() if k != "CheckoutRequestID"},
        headers=daraja.bearer(),
    )

    assert_daraja_error(no_token, 404, "404.001.03", "Invalid Access Token")
    assert_daraja_error(wrong_password, 500, "500.001.1001", "Wrong credentials")
    for response in (unknown, missing):
        assert_daraja_error(response, 400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")


def test_failed_callback_delivery_is_recorded_and_not_retried(served_sandbox, serve):
    refusing = CallbackReceiver(status=500)
    url = serve(refusing)
    token = http_token(served_sandbox)
    accepted = http_push(served_sandbox, token, push_body(callback_url=url)).json()
    refusing.wait_for(accepted["CheckoutRequestID"])
    time.sleep(1.0)  # a retry, if there were one, would have come by now

    shown = requests.get(
        f"{served_sandbox}/sandbox/stk-pushes/{accepted['CheckoutRequestID']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    assert len(refusing.bodies()) == 1
    [attempt] = shown["callback_attempts"]
    assert (attempt["copy"], attempt["status"]) == (1, 500)


# Subscriber lock ------------------------------------------------------------------------


def test_lock_number_is_refused_at_once(daraja):
    response = daraja.push(push_body("254700001001"))
    assert_daraja_error(response, 500, "500.001.1001", LOCKED)


def test_second_push_to_a_busy_subscriber_is_refused_until_the_first_is_final(make_sandbox):
    daraja = DarajaTestClient(make_sandbox(SANDBOX_CALLBACK_DELAY_SECONDS=2.0).test_client())
    phone = random_phone()
    first = daraja.push(push_body(phone)).get_json()

    second = daraja.push(push_body(phone))
    other_phone = daraja.push(push_body())
    daraja.query_until_final(first["CheckoutRequestID"])
    third = daraja.push(push_body(phone))

    assert_daraja_error(second, 500, "500.001.1001", LOCKED)
    assert other_phone.status_code == 200
    assert third.status_code == 200


def test_subscriber_lock_can_be_turned_off(make_sandbox):
    daraja = DarajaTestClient(
        make_sandbox(
            SANDBOX_CALLBACK_DELAY_SECONDS=5.0, SANDBOX_SUBSCRIBER_LOCK="false"
        ).test_client()
    )
    phone = random_phone()
    ids = {daraja.push(push_body(phone)).get_json()["CheckoutRequestID"] for _ in range(3)}
    assert len(ids) == 3


def test_concurrent_pushes_across_processes_lock_the_subscriber_once(make_sandbox):
    # Two apps on one prefix stand for two gunicorn workers: only Redis is shared.
    workers = [make_sandbox(SANDBOX_CALLBACK_DELAY_SECONDS=5.0) for _ in range(2)]
    clients = [DarajaTestClient(app.test_client()) for app in workers]
    for client in clients:
        client.token  # noqa: B018 (fetch tokens before the race)
    phone = random_phone()
    statuses: list[int] = []
    lock = threading.Lock()

    def push(client: DarajaTestClient) -> None:
        status = client.push(push_body(phone)).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=push, args=(clients[i % 2],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(statuses) == [200] + [500] * 9


# Restarts -------------------------------------------------------------------------------


def test_outcome_and_pending_callback_survive_a_restart(make_sandbox, serve, receiver, monkeypatch):
    before = make_sandbox()
    # This "process" dies before sending anything: its callback thread never runs.
    monkeypatch.setattr(
        before.extensions["lango.sandbox"].dispatcher, "ensure_running", lambda: None
    )
    accepted = DarajaTestClient(before.test_client()).push(push_body(callback_url=receiver.url))
    checkout_request_id = accepted.get_json()["CheckoutRequestID"]

    after = make_sandbox()  # same Redis, same prefix: the restarted sandbox
    daraja = DarajaTestClient(after.test_client())
    final = daraja.query_until_final(checkout_request_id)
    [callback] = receiver.wait_for(checkout_request_id)

    assert final.get_json()["ResultCode"] == "0"
    assert callback["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_request_id


# A third-party client, unchanged -----------------------------------------------------------


@pytest.mark.parametrize("numbers_as", [str, int])
def test_a_typical_sdk_flow_works_over_http(served_sandbox, receiver, numbers_as):
    """What django-daraja / mpesa-node-library / the Go SDK do, step by step."""
    oauth = requests.get(
        f"{served_sandbox}/oauth/v1/generate?grant_type=client_credentials",
        auth=requests.auth.HTTPBasicAuth(KEY, SECRET),
        timeout=10,
    )
    token = oauth.json()["access_token"]
    timestamp = datetime.now(EAT).strftime("%Y%m%d%H%M%S")
    sdk_password = base64.b64encode((SHORTCODE + PUBLIC_SANDBOX_PASSKEY + timestamp).encode())
    phone = random_phone()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    push = requests.post(
        f"{served_sandbox}{PUSH}",
        data=json.dumps(
            {
                "BusinessShortCode": numbers_as(SHORTCODE),
                "Password": sdk_password.decode("utf-8"),
                "Timestamp": timestamp,
                "TransactionType": "CustomerPayBillOnline",
                "Amount": numbers_as(10),
                "PartyA": numbers_as(phone),
                "PartyB": numbers_as(SHORTCODE),
                "PhoneNumber": numbers_as(phone),
                "CallBackURL": f"{receiver.url}/mpesa/callback",
                "AccountReference": "Order-1001",
                "TransactionDesc": "Order 1001",
            }
        ),
        headers=headers,
        timeout=10,
    )
    assert push.status_code == 200, push.text
    checkout_request_id = push.json()["CheckoutRequestID"]

    [callback] = receiver.wait_for(checkout_request_id)
    query = requests.post(
        f"{served_sandbox}{QUERY}",
        json={
            "BusinessShortCode": numbers_as(SHORTCODE),
            "Password": sdk_password.decode(),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        },
        headers=headers,
        timeout=10,
    )

    assert oauth.json()["expires_in"] == "3599"
    assert callback["Body"]["stkCallback"]["CallbackMetadata"]["Item"][0]["Value"] == 10
    assert query.status_code == 200
    assert (query.json()["ResponseCode"], query.json()["ResultCode"]) == ("0", "0")


# Anything else ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("POST", "/mpesa/c2b/v1/simulate"), ("GET", "/mpesa/stkpush/v2/x")],
)
def test_unknown_paths_are_daraja_404s_not_html(sandbox, method, path):
    response = sandbox.test_client().open(path, method=method)
    assert response.mimetype == "application/json"
    assert_daraja_error(response, 404, "404.001.01", "Resource not found")


def test_a_broken_redis_is_a_daraja_500_not_a_crash_page(make_sandbox):
    app = make_sandbox(SANDBOX_REDIS_URL="redis://127.0.0.1:1/0")  # nothing listens there
    app.config["TESTING"] = False  # let the error handler answer, as in production
    response = app.test_client().get(OAUTH, headers=basic())
    assert_daraja_error(response, 500, "500.003.1001", "Internal Server Error")


def test_debug_view_shows_request_outcome_and_attempts(served_sandbox, receiver):
    token = http_token(served_sandbox)
    accepted = http_push(
        served_sandbox, token, push_body("254700000001", f"{receiver.url}/cb/s3cret")
    ).json()
    receiver.wait_for(accepted["CheckoutRequestID"])
    url = f"{served_sandbox}/sandbox/stk-pushes/{accepted['CheckoutRequestID']}"

    deadline = time.monotonic() + 10
    while True:  # the attempt is recorded just after the receiver answers
        shown = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        if shown["callback_attempts"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    assert shown["request"]["callback_origin"] == receiver.url  # the secret path is not shown
    assert "s3cret" not in json.dumps(shown)
    assert shown["outcome"]["result_code"] == 1 and shown["final"] is True
    assert shown["callback_attempts"][0]["status"] == 200
    assert requests.get(url, timeout=10).status_code == 404  # needs a token
    missing = requests.get(url + "x", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert missing.json()["errorCode"] == "404.001.01"


# Configuration and identifiers -------------------------------------------------------------


def test_config_needs_a_redis_url_and_reports_every_problem(monkeypatch):
    monkeypatch.delenv("SANDBOX_REDIS_URL", raising=False)
    with pytest.raises(SandboxConfigError) as raised:
        load_sandbox_config(
            {"SANDBOX_CALLBACK_DELAY_SECONDS": "soon", "SANDBOX_SUBSCRIBER_LOCK": "maybe"}
        )
    message = str(raised.value)
    for name in ("SANDBOX_REDIS_URL", "SANDBOX_CALLBACK_DELAY_SECONDS", "SANDBOX_SUBSCRIBER_LOCK"):
        assert name in message


def test_config_falls_back_to_the_environment_then_the_defaults(monkeypatch):
    monkeypatch.setenv("SANDBOX_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SANDBOX_CALLBACK_DELAY_SECONDS", "0.5")
    monkeypatch.delenv("SANDBOX_SHORTCODE", raising=False)

    config = load_sandbox_config({"SANDBOX_SUBSCRIBER_LOCK": "off"})

    assert config.SANDBOX_CALLBACK_DELAY_SECONDS == 0.5
    assert config.SANDBOX_SUBSCRIBER_LOCK is False
    assert (config.SANDBOX_SHORTCODE, config.SANDBOX_PASSKEY) == ("174379", PUBLIC_SANDBOX_PASSKEY)
    assert config.SANDBOX_LATE_CALLBACK_SECONDS == 60.0
    assert config.SANDBOX_EXPIRES_IN_AS_NUMBER is False


def test_ids_follow_the_layouts_seen_in_real_payloads():
    # Real pairs from daraja.md: a CheckoutRequestID and its push; a receipt and its date.
    at = datetime(2024, 7, 4, 15, 15, 23, 730000, tzinfo=EAT)
    assert checkout_request_id(at, "254722724071") == "ws_CO_04072024151523730722724071"
    assert receipt_number(datetime(2022, 10, 13, 15, 45, tzinfo=EAT)).startswith("QJD")
    assert receipt_number(datetime(2026, 12, 31, tzinfo=EAT))[:3] == "ULV"
    assert receipt_number(datetime(2019, 1, 10, tzinfo=EAT))[:3] == "NAA"
