"""The floor for bench/stk_push.py: the least a Flask app on this stack can do per request.

One POST route that parses the JSON body, inserts one row into `bench_floor` (created by
bench/stk_push.py in its database) and answers 202 with JSON. Same stack as Lango: Flask
under gunicorn, SQLAlchemy with psycopg 3 and the same pool options, but no API key, no
tenant scope, no idempotency, no rate limit, no Daraja call.

    DATABASE_URL=postgresql://… gunicorn bench.floor_app:app
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request
from sqlalchemy import create_engine, text

app = Flask(__name__)

_url = os.environ["DATABASE_URL"]
engine = create_engine(
    "postgresql+psycopg://" + _url.split("://", 1)[1],
    # As Lango's engine (core/__init__.py, default DB_POOL_SIZE).
    pool_size=int(os.environ.get("DB_POOL_SIZE", "5")),
    pool_pre_ping=True,
    connect_args={"connect_timeout": 5},
)

_INSERT = text(
    "INSERT INTO bench_floor (phone_number, amount, account_reference) "
    "VALUES (:phone_number, :amount, :account_reference) RETURNING id"
)


@app.post("/v1/stk-pushes")
def create_push():
    body = request.get_json()
    with engine.begin() as connection:
        row_id = connection.execute(
            _INSERT,
            {
                "phone_number": body["phone_number"],
                "amount": body["amount"],
                "account_reference": body["account_reference"],
            },
        ).scalar_one()
    return jsonify({"id": row_id, "status": "pending"}), 202
