"""The Daraja client against a fake Daraja at the HTTP boundary (`responses`) and a real
Redis (token cache, token lock, circuit breaker). Time is an injected clock: nothing sleeps
to make time pass."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import multiprocessing
import secrets
import threading
from datetime import UTC, datetime

import pytest
import requests
import responses
from redis import Redis
from responses import matchers

from payments.daraja import (
    OAUTH_PATH,
    STK_PUSH_PATH,
    STK_QUERY_PATH,
    DarajaClient,
    DarajaCredentials,
    DarajaRejected,
    DarajaUnavailable,
    StkPushAccepted,
    StkQueryResult,
    daraja_breaker,
)

BASE_URL = "https://daraja.example.test"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
CONSUMER_KEY = "ck_lango_test_consumer_key"
CONSUMER_SECRET = "cs_very_secret_consumer_secret"
PHONE = "254708374149"
SAMPLE_TOKEN = "c9SQxWWhmdVRlyh0zh8gZDTkubVF"
PAYBILL = DarajaCredentials(
    base_url=BASE_URL,
    consumer_key=CONSUMER_KEY,
    consumer_secret=CONSUMER_SECRET,
    shortcode="174379",
    passkey=PASSKEY,
    kind="paybill",
    till_number=None,
)
TILL = DarajaCredentials(
    base_url=BASE_URL,
    consumer_key=CONSUMER_KEY,
    consumer_secret=CONSUMER_SECRET,
    shortcode="5012345",
    passkey=PASSKEY,
    kind="till",
    till_number="8765432",
)
ACCEPTED = {
    "MerchantRequestID": "29115-34620561-1",
    "CheckoutRequestID": "ws_CO_191220191020363925",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}
PUSH_URL = BASE_URL + STK_PUSH_PATH
QUERY_URL = BASE_URL + STK_QUERY_PATH
OAUTH_URL = BASE_URL + OAUTH_PATH
# 2024-07-04 12:15:23 UTC is 15:15:23 in Nairobi.
FROZEN = datetime(2024, 7, 4, 12, 15, 23, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def redis(redis_url) -> Redis:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(redis):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test:daraja:{secrets.token_hex(6)}"
    yield prefix
    keys = list(redis.scan_iter(f"{prefix}:*"))
    if keys:
        redis.delete(*keys)


@pytest.fixture
def clock() -> Clock:
    return Clock(FROZEN)


@pytest.fixture
def make_client(redis, prefix, clock):
    def make(credentials=PAYBILL, **options) -> DarajaClient:
        return DarajaClient(credentials, redis, clock=clock, key_prefix=prefix, **options)

    return make


@pytest.fixture
def client(make_client) -> DarajaClient:
    return make_client()


@pytest.fixture
def daraja():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def oauth_ok(mock, token=SAMPLE_TOKEN, expires_in="3599"):
    mock.add(
        responses.GET,
        OAUTH_URL,
        json={"access_token": token, "expires_in": expires_in},
        match=[matchers.query_param_matcher({"grant_type": "client_credentials"})],
    )


def calls_to(mock, url: str) -> list:
    return [call for call in mock.calls if call.request.url.split("?")[0] == url]


def push(client, **overrides) -> StkPushAccepted:
    arguments = {
        "phone": PHONE,
        "amount": 100,
        "account_reference": "INV0001",
        "description": "Order 1001",
        "callback_url": "https://lango.example.test/callbacks/mpesa/stk/abc",
    }
    return client.stk_push(**{**arguments, **overrides})


def sent_body(call) -> dict:
    return json.loads(call.request.body)


# --- request building -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        (datetime(2024, 7, 4, 12, 15, 23, tzinfo=UTC), "20240704151523"),
        # 22:30 UTC on New Year's Eve is already next year in Nairobi.
        (datetime(2024, 12, 31, 22, 30, 0, tzinfo=UTC), "20250101013000"),
    ],
)
def test_timestamp_is_east_africa_time_and_password_is_built_from_it(
    daraja, client, clock, utc, expected
):
    clock.now = utc.timestamp()
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)

    push(client)

    body = sent_body(calls_to(daraja, PUSH_URL)[0])
    assert body["Timestamp"] == expected
    assert base64.b64decode(body["Password"]).decode() == "174379" + PASSKEY + expected


def test_paybill_push_body(daraja, client):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)

    push(client)

    call = calls_to(daraja, PUSH_URL)[0]
    assert call.request.headers["Content-Type"] == "application/json"
    assert call.request.headers["Authorization"] == "Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF"
    body = sent_body(call)
    assert {key: body[key] for key in body if key != "Password"} == {
        "BusinessShortCode": "174379",
        "Timestamp": "20240704151523",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 100,
        "PartyA": PHONE,
        "PartyB": "174379",
        "PhoneNumber": PHONE,
        "CallBackURL": "https://lango.example.test/callbacks/mpesa/stk/abc",
        "AccountReference": "INV0001",
        "TransactionDesc": "Order 1001",
    }


def test_till_push_uses_the_store_number_as_shortcode_and_the_till_as_party_b(daraja, make_client):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)

    push(make_client(TILL))

    body = sent_body(calls_to(daraja, PUSH_URL)[0])
    assert body["BusinessShortCode"] == "5012345"
    assert body["PartyB"] == "8765432"
    assert body["TransactionType"] == "CustomerBuyGoodsOnline"
    assert base64.b64decode(body["Password"]).decode() == "5012345" + PASSKEY + "20240704151523"


def test_accepted_push_is_a_typed_result(daraja, client):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)

    assert push(client) == StkPushAccepted(
        merchant_request_id="29115-34620561-1",
        checkout_request_id="ws_CO_191220191020363925",
        response_code="0",
        response_description="Success. Request accepted for processing",
        customer_message="Success. Request accepted for processing",
    )


def test_oauth_is_a_get_with_basic_auth_and_every_call_has_the_timeout(daraja, make_client):
    client = make_client(timeout=(2.0, 9.0))
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)
    daraja.add(responses.POST, QUERY_URL, json={"ResultCode": "0", "ResultDesc": "ok"})

    push(client)
    client.stk_query("ws_CO_191220191020363925")

    oauth_call = calls_to(daraja, OAUTH_URL)[0]
    expected = base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
    assert oauth_call.request.method == "GET"
    assert oauth_call.request.headers["Authorization"] == f"Basic {expected}"
    assert len(daraja.calls) == 3
    assert all(call.request.req_kwargs["timeout"] == (2.0, 9.0) for call in daraja.calls)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"account_reference": "INV-00000001X"}, "account_reference"),  # 13 > 12
        ({"account_reference": ""}, "account_reference"),
        ({"description": "Order 10000001"}, "description"),  # 14 > 13
        ({"amount": 0}, "amount"),
        ({"amount": 10.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"phone": "0708374149"}, "phone"),
        ({"phone": "25470837414"}, "phone"),
        ({"callback_url": "https://x.test/cb "}, "callback_url"),
        ({"callback_url": "ftp://x.test/cb"}, "callback_url"),
    ],
)
def test_arguments_daraja_would_refuse_are_value_errors_and_nothing_is_sent(
    daraja, client, overrides, complaint
):
    with pytest.raises(ValueError, match=complaint):
        push(client, **overrides)
    assert len(daraja.calls) == 0


def test_credentials_keep_secrets_out_of_repr_and_need_a_till_number():
    assert CONSUMER_SECRET not in repr(PAYBILL)
    assert PASSKEY not in repr(PAYBILL)
    assert CONSUMER_KEY not in repr(PAYBILL)
    with pytest.raises(ValueError, match="till_number"):
        DarajaCredentials(BASE_URL, "k", "s", "5012345", "p", "till", None)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "error_class"),
    [
        (400, "400.002.02", "Bad Request - Invalid PhoneNumber", DarajaRejected),
        (400, "400.002.02", "Bad Request - Invalid Amount", DarajaRejected),
        (500, "500.001.1001", "Wrong credentials", DarajaRejected),
        (500, "500.001.1001", "Merchant does not exist", DarajaRejected),
        (
            500,
            "500.001.1001",
            "Unable to lock subscriber, a transaction is already in process for the current "
            "subscriber",
            DarajaRejected,
        ),
        (404, "404.001.04", "Invalid Authentication Header", DarajaRejected),
        (500, "500.003.02", "System is busy. Please try again in few minutes.", DarajaUnavailable),
        (500, "500.003.02", "Error Occurred: Spike Arrest Violation", DarajaUnavailable),
        (500, "500.003.03", "Quota Violation", DarajaUnavailable),
        (500, "500.003.1001", "Internal Server Error", DarajaUnavailable),
        (503, "503.001.01", "Service Unavailable", DarajaUnavailable),
    ],
)
def test_error_envelope_maps_to_the_right_exception(
    daraja, client, status, code, message, error_class
):
    oauth_ok(daraja)
    envelope = {"requestId": "1c5b-4ba8-815c-ac45c57a3db01495926", "errorCode": code}
    daraja.add(responses.POST, PUSH_URL, status=status, json={**envelope, "errorMessage": message})

    with pytest.raises(error_class) as raised:
        push(client)

    error = raised.value
    assert type(error) is error_class
    assert (error.error_code, error.error_message) == (code, message)
    assert error.http_status == status
    assert error.request_id == "1c5b-4ba8-815c-ac45c57a3db01495926"
    assert len(calls_to(daraja, PUSH_URL)) == 1  # never retried


@pytest.mark.parametrize(
    ("exception", "maybe_processed"),
    [
        (requests.ConnectTimeout("connect timed out"), False),
        (requests.ReadTimeout("read timed out"), True),
        (requests.ConnectionError("connection reset by peer"), True),
    ],
)
def test_timeouts_and_connection_errors_are_unavailable(daraja, client, exception, maybe_processed):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, body=exception)

    with pytest.raises(DarajaUnavailable) as raised:
        push(client)

    assert raised.value.error_code is None
    assert raised.value.maybe_processed is maybe_processed


def test_refused_connection_is_unavailable_and_certainly_not_processed(redis, prefix, clock):
    nothing_listens = DarajaCredentials("http://127.0.0.1:1", "k", "s", "174379", "p")
    client = DarajaClient(nothing_listens, redis, clock=clock, key_prefix=prefix)

    with pytest.raises(DarajaUnavailable) as raised:
        push(client)

    assert raised.value.maybe_processed is False


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (
            404,
            json.dumps(
                {
                    "fault": {
                        "faultstring": "Unable to identify proxy for host: secure and url: "
                        "/mpesa/stkpush/v1/processrequest",
                        "detail": {"errorcode": "messaging.adaptors.http.flow.ApplicationNotFound"},
                    }
                }
            ),
            "application/json",
        ),
        (502, "<html><body>Bad Gateway</body></html>", "text/html"),
        (200, "not json", "text/plain"),
        (200, "[1, 2]", "application/json"),
    ],
)
def test_gateway_faults_and_non_json_answers_are_unavailable(
    daraja, client, status, body, content_type
):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, status=status, body=body, content_type=content_type)

    with pytest.raises(DarajaUnavailable) as raised:
        push(client)

    assert raised.value.http_status == status


def test_gateway_fault_keeps_its_code_and_message(daraja, client):
    oauth_ok(daraja)
    fault = {"faultstring": "Unable to identify proxy", "detail": {"errorcode": "flow.NotFound"}}
    daraja.add(responses.POST, PUSH_URL, status=404, json={"fault": fault})

    with pytest.raises(DarajaUnavailable) as raised:
        push(client)

    assert (raised.value.error_code, raised.value.error_message) == (
        "flow.NotFound",
        "Unable to identify proxy",
    )


def test_wrong_consumer_secret_is_rejected_without_retrying(daraja, client):
    daraja.add(responses.GET, OAUTH_URL, status=400, body="")

    with pytest.raises(DarajaRejected) as raised:
        push(client)

    assert raised.value.http_status == 400
    assert len(daraja.calls) == 1


# --- OAuth token cache ------------------------------------------------------------------


def test_hundred_sequential_pushes_make_one_oauth_call(daraja, client):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)

    for _ in range(100):
        push(client)

    assert len(calls_to(daraja, OAUTH_URL)) == 1
    assert len(calls_to(daraja, PUSH_URL)) == 100


def test_twenty_concurrent_callers_with_a_cold_cache_make_one_oauth_call(daraja, make_client):
    def slow_oauth(request):
        # Hold the OAuth answer so the other nineteen pile up behind the lock.
        threading.Event().wait(0.3)
        return 200, {}, json.dumps({"access_token": "fresh-token-0123456789", "expires_in": "3599"})

    daraja.add_callback(responses.GET, OAUTH_URL, callback=slow_oauth)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)
    clients = [make_client() for _ in range(20)]  # one per worker, as the service builds them
    start = threading.Barrier(20)
    outcomes: list = []

    def worker(client):
        start.wait()
        try:
            outcomes.append(push(client))
        except Exception as error:  # collected and asserted below
            outcomes.append(error)

    threads = [threading.Thread(target=worker, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert all(isinstance(outcome, StkPushAccepted) for outcome in outcomes), outcomes
    assert len(outcomes) == 20
    assert len(calls_to(daraja, OAUTH_URL)) == 1
    tokens = {call.request.headers["Authorization"] for call in calls_to(daraja, PUSH_URL)}
    assert tokens == {"Bearer fresh-token-0123456789"}


def test_concurrent_processes_with_a_cold_cache_make_one_oauth_call(redis_url, prefix, clock):
    # Each forked worker has its own fake Daraja (responses is per process), so the fake
    # counts OAuth calls in Redis, where all of them can be added up.
    counter = f"{prefix}:oauth-calls"
    context = multiprocessing.get_context("fork")
    start = context.Barrier(4)
    workers = [
        context.Process(target=_push_in_a_process, args=(redis_url, prefix, counter, start))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert int(Redis.from_url(redis_url).get(counter)) == 1


def _push_in_a_process(redis_url, prefix, counter, start) -> None:
    redis = Redis.from_url(redis_url)

    def slow_oauth(request):
        redis.incr(counter)
        threading.Event().wait(0.3)
        return 200, {}, json.dumps({"access_token": "process-token-0123", "expires_in": "3599"})

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.GET, OAUTH_URL, callback=slow_oauth)
        mock.add(responses.POST, PUSH_URL, json=ACCEPTED)
        client = DarajaClient(PAYBILL, redis, clock=Clock(FROZEN), key_prefix=prefix)
        start.wait()
        push(client)
        assert mock.calls[-1].request.headers["Authorization"] == "Bearer process-token-0123"


@pytest.mark.parametrize("expires_in", ["3599", 3599])
def test_expires_in_as_string_or_number_caches_until_a_minute_before_expiry(
    daraja, client, redis, prefix, expires_in
):
    oauth_ok(daraja, token="tok-3599", expires_in=expires_in)

    assert client.access_token() == "tok-3599"
    assert client.access_token() == "tok-3599"

    assert len(daraja.calls) == 1
    [key] = list(redis.scan_iter(f"{prefix}:token:*"))
    assert redis.get(key) == b"tok-3599"
    assert 3530 <= redis.ttl(key) <= 3539


def test_token_cache_key_names_neither_the_secret_nor_the_consumer_key(daraja, client, redis):
    oauth_ok(daraja)
    client.access_token()

    keys = [key.decode() for key in redis.scan_iter("*")]
    assert not any(CONSUMER_SECRET in key or CONSUMER_KEY in key for key in keys)


def test_expired_cached_token_is_refreshed_once_and_the_call_retried_once(daraja, client):
    tokens = iter(["stale-token", "fresh-token"])
    daraja.add_callback(
        responses.GET,
        OAUTH_URL,
        callback=lambda request: (
            200,
            {},
            json.dumps({"access_token": next(tokens), "expires_in": "3599"}),
        ),
    )
    client.access_token()  # cache "stale-token", which Daraja has since expired

    def push_answer(request):
        if request.headers["Authorization"] == "Bearer stale-token":
            invalid = {"requestId": "1", "errorCode": "404.001.03"}
            return 404, {}, json.dumps({**invalid, "errorMessage": "Invalid Access Token"})
        return 200, {}, json.dumps(ACCEPTED)

    daraja.add_callback(responses.POST, PUSH_URL, callback=push_answer)

    assert push(client).checkout_request_id == ACCEPTED["CheckoutRequestID"]
    assert len(calls_to(daraja, OAUTH_URL)) == 2
    pushes = calls_to(daraja, PUSH_URL)
    assert [call.request.headers["Authorization"] for call in pushes] == [
        "Bearer stale-token",
        "Bearer fresh-token",
    ]
    assert client.access_token() == "fresh-token"  # the fresh one is what is cached now


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (
            404,
            {"requestId": "1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"},
        ),
        (
            401,
            {
                "requestId": "1",
                "errorCode": "401.002.01",
                "errorMessage": "Error Occurred - Invalid Access Token - {token}",
            },
        ),
        (
            400,
            {"requestId": "1", "errorCode": "400.003.01", "errorMessage": "Invalid Access Token"},
        ),
        (
            401,
            {
                "fault": {
                    "faultstring": "Invalid access token",
                    "detail": {"errorcode": "oauth.v2.InvalidAccessToken"},
                }
            },
        ),
    ],
)
def test_persistently_invalid_token_is_retried_once_then_rejected(daraja, client, status, answer):
    tokens = iter(f"token-number-{n}" for n in range(10))
    daraja.add_callback(
        responses.GET,
        OAUTH_URL,
        callback=lambda request: (
            200,
            {},
            json.dumps({"access_token": next(tokens), "expires_in": 3599}),
        ),
    )

    def refuse(request):
        token = request.headers["Authorization"].removeprefix("Bearer ")
        return status, {}, json.dumps(answer).replace("{token}", token)

    daraja.add_callback(responses.POST, PUSH_URL, callback=refuse)

    with pytest.raises(DarajaRejected) as raised:
        push(client)

    assert len(calls_to(daraja, OAUTH_URL)) == 2
    assert len(calls_to(daraja, PUSH_URL)) == 2
    assert raised.value.http_status == status
    assert "token-number" not in str(raised.value)  # Daraja's echo of the token is scrubbed


# --- STK query --------------------------------------------------------------------------


def test_pending_query_is_pending_not_an_error(daraja, client):
    oauth_ok(daraja)
    pending = {
        "requestId": "ws_CO_20022018230142206",
        "errorCode": "500.001.1001",
        "errorMessage": "The transaction is being processed",
    }
    daraja.add(responses.POST, QUERY_URL, status=500, json=pending)

    result = client.stk_query("ws_CO_20022018230142206")

    assert result == StkQueryResult(
        pending=True, result_code=None, result_description=None, raw=pending
    )
    body = sent_body(calls_to(daraja, QUERY_URL)[0])
    assert body["CheckoutRequestID"] == "ws_CO_20022018230142206"
    assert body["Timestamp"] == "20240704151523"
    assert base64.b64decode(body["Password"]).decode() == "174379" + PASSKEY + "20240704151523"


@pytest.mark.parametrize(("sent", "kept"), [("1032", "1032"), ("0", "0"), (1032, "1032")])
def test_final_query_keeps_result_codes_as_strings(daraja, client, sent, kept):
    oauth_ok(daraja)
    answer = {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": "22205-34066-1",
        "CheckoutRequestID": "ws_CO_13012021093521236557",
        "ResultCode": sent,
        "ResultDesc": "Request cancelled by user",
    }
    daraja.add(responses.POST, QUERY_URL, json=answer)

    result = client.stk_query("ws_CO_13012021093521236557")

    assert result.pending is False
    assert result.result_code == kept
    assert result.result_description == "Request cancelled by user"
    assert result.raw == answer


@pytest.mark.parametrize("sent", [{"a": 1}, True, 1.5, -1, "1032 ", "x" * 30, 10**30, None])
def test_a_query_answer_without_a_daraja_result_code_is_an_error_not_an_outcome(
    daraja, client, sent
):
    oauth_ok(daraja)
    answer = {"ResponseCode": "0", "ResultCode": sent, "ResultDesc": "?"}
    daraja.add(responses.POST, QUERY_URL, json=answer)

    with pytest.raises(DarajaUnavailable, match="ResultCode"):
        client.stk_query("ws_CO_13012021093521236557")


def test_other_query_refusals_are_still_errors(daraja, client):
    oauth_ok(daraja)
    wrong = {"requestId": "x", "errorCode": "500.001.1001", "errorMessage": "Wrong credentials"}
    daraja.add(responses.POST, QUERY_URL, status=500, json=wrong)

    with pytest.raises(DarajaRejected, match="Wrong credentials"):
        client.stk_query("ws_CO_13012021093521236557")


# --- circuit breaker --------------------------------------------------------------------


def test_circuit_opens_after_five_consecutive_failures_and_stops_calling(
    daraja, client, make_client
):
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, body=requests.ConnectionError("connection reset"))
    for _ in range(5):
        with pytest.raises(DarajaUnavailable, match="connection"):
            push(client)
    calls_when_opened = len(daraja.calls)

    for other_worker in (client, make_client()):  # the open state is shared through Redis
        with pytest.raises(DarajaUnavailable, match="circuit open"):
            push(other_worker)
        with pytest.raises(DarajaUnavailable, match="circuit open"):
            other_worker.stk_query("ws_CO_1")

    assert len(daraja.calls) == calls_when_opened


def test_circuit_half_opens_for_one_trial_after_the_cool_off_and_closes_on_success(
    daraja, client, make_client, clock, redis, prefix
):
    breaker = daraja_breaker(redis, BASE_URL, clock=clock, key_prefix=prefix)
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, body=requests.ReadTimeout("read timed out"))
    for _ in range(5):
        with pytest.raises(DarajaUnavailable):
            push(client)
    assert breaker.state() == "open"

    clock.advance(29)
    with pytest.raises(DarajaUnavailable, match="circuit open"):
        push(client)
    clock.advance(2)
    assert breaker.state() == "half-open"

    refused_during_trial = []

    def trial_answer(request):
        # While the trial is in flight, any other worker still fails fast.
        try:
            push(make_client())
        except DarajaUnavailable as error:
            refused_during_trial.append(str(error))
        return 200, {}, json.dumps(ACCEPTED)

    daraja.remove(responses.POST, PUSH_URL)
    daraja.add_callback(responses.POST, PUSH_URL, callback=trial_answer)
    before = len(calls_to(daraja, PUSH_URL))

    assert push(client).checkout_request_id == ACCEPTED["CheckoutRequestID"]

    assert refused_during_trial == ["circuit open"]
    assert len(calls_to(daraja, PUSH_URL)) == before + 1
    assert breaker.state() == "closed"
    daraja.remove(responses.POST, PUSH_URL)
    daraja.add(responses.POST, PUSH_URL, json=ACCEPTED)
    push(make_client())
    assert len(calls_to(daraja, PUSH_URL)) == before + 2


def test_failed_trial_reopens_the_circuit_for_another_cool_off(
    daraja, client, clock, redis, prefix
):
    breaker = daraja_breaker(redis, BASE_URL, clock=clock, key_prefix=prefix)
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, status=503, body="upstream down")
    for _ in range(5):
        with pytest.raises(DarajaUnavailable):
            push(client)

    clock.advance(31)
    with pytest.raises(DarajaUnavailable, match="HTTP 503"):
        push(client)  # the trial, and it fails

    assert breaker.state() == "open"
    calls = len(daraja.calls)
    with pytest.raises(DarajaUnavailable, match="circuit open"):
        push(client)
    assert len(daraja.calls) == calls
    clock.advance(31)
    assert breaker.state() == "half-open"


def test_cool_off_and_threshold_are_configurable(daraja, make_client, clock, redis, prefix):
    breaker = daraja_breaker(
        redis, BASE_URL, failure_threshold=2, cool_off=5, clock=clock, key_prefix=prefix
    )
    client = make_client(breaker=breaker)
    oauth_ok(daraja)
    daraja.add(responses.POST, PUSH_URL, body=requests.ConnectTimeout("connect timed out"))
    for _ in range(2):
        with pytest.raises(DarajaUnavailable):
            push(client)

    assert breaker.state() == "open"
    clock.advance(5)
    assert breaker.state() == "half-open"


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "400.002.02", "Bad Request - Invalid PhoneNumber"),
        (500, "500.001.1001", "Unable to lock subscriber, a transaction is already in process"),
        # Quota is per consumer key (one tenant); it must not shut every tenant out.
        (500, "500.003.03", "Quota Violation"),
    ],
)
def test_refusals_do_not_trip_the_circuit(
    daraja, client, redis, prefix, clock, status, code, message
):
    breaker = daraja_breaker(redis, BASE_URL, clock=clock, key_prefix=prefix)
    oauth_ok(daraja)
    envelope = {"requestId": "1", "errorCode": code, "errorMessage": message}
    daraja.add(responses.POST, PUSH_URL, status=status, json=envelope)

    for _ in range(10):
        with pytest.raises((DarajaRejected, DarajaUnavailable)) as raised:
            push(client)
        assert "circuit" not in str(raised.value)

    assert breaker.state() == "closed"
    assert len(calls_to(daraja, PUSH_URL)) == 10


def test_a_success_resets_the_consecutive_failure_count(daraja, client, redis, prefix, clock):
    breaker = daraja_breaker(redis, BASE_URL, clock=clock, key_prefix=prefix)
    oauth_ok(daraja)
    answers = iter(
        [requests.ConnectionError("reset")] * 4 + [None] + [requests.ConnectionError("reset")] * 4
    )

    def answer(request):
        failure = next(answers)
        if failure is not None:
            raise failure
        return 200, {}, json.dumps(ACCEPTED)

    daraja.add_callback(responses.POST, PUSH_URL, callback=answer)
    for _ in range(9):
        with contextlib.suppress(DarajaUnavailable):
            push(client)

    assert breaker.state() == "closed"


# --- logging ----------------------------------------------------------------------------


def test_logs_carry_no_secret_token_password_or_full_phone(daraja, client, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = iter(["first-token-ABCDEFGHIJKLMNOP", "second-token-QRSTUVWXYZ012345"])
    daraja.add_callback(
        responses.GET,
        OAUTH_URL,
        callback=lambda request: (
            200,
            {},
            json.dumps({"access_token": next(tokens), "expires_in": "3599"}),
        ),
    )
    outcomes = iter(["ok", "expired", "ok", "refused", "timeout"])

    def answer(request):
        outcome = next(outcomes)
        token = request.headers["Authorization"].removeprefix("Bearer ")
        if outcome == "expired":
            message = f"Error Occurred - Invalid Access Token - {token}"
            return 401, {}, json.dumps({"errorCode": "401.002.01", "errorMessage": message})
        if outcome == "refused":
            return 400, {}, json.dumps({"errorCode": "400.002.02", "errorMessage": "Bad Request"})
        if outcome == "timeout":
            raise requests.ReadTimeout("read timed out")
        return 200, {}, json.dumps(ACCEPTED)

    daraja.add_callback(responses.POST, PUSH_URL, callback=answer)
    push(client)
    push(client)  # expired token → refreshed → accepted
    for _ in range(2):
        with pytest.raises((DarajaRejected, DarajaUnavailable)):
            push(client)

    password = sent_body(calls_to(daraja, PUSH_URL)[0])["Password"]
    forbidden = [
        CONSUMER_SECRET,
        PASSKEY,
        password,
        "first-token-ABCDEFGHIJKLMNOP",
        "second-token-QRSTUVWXYZ012345",
        PHONE,
    ]
    logged = [caplog.text] + [repr(vars(record)) for record in caplog.records]
    assert caplog.records, "the client logs what it does"
    assert "2547******49" in " ".join(logged)
    for text in logged:
        for secret in forbidden:
            assert secret not in text
