"""Locust users for people who already run Locust: v2 binary and JSON requests, real MNIST.

locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 30s
"""

from __future__ import annotations

import itertools
import os

from locust import HttpUser, between, task

from loadtest.client import encode
from models.data import load_mnist

MODEL = os.environ.get("EXITSERVE_LOAD_MODEL", "mnist")
_TEST = load_mnist("t10k")
_BINARY = [encode(_TEST.x[i : i + 1], _TEST.y[i : i + 1], "binary") for i in range(1000)]
_JSON = [encode(_TEST.x[i : i + 1], _TEST.y[i : i + 1], "json") for i in range(200)]


class InferUser(HttpUser):
    """Mostly binary-tensor requests, some JSON, one sample each."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self._binary = itertools.cycle(_BINARY)
        self._json = itertools.cycle(_JSON)

    @task(4)
    def infer_binary(self) -> None:
        req = next(self._binary)
        self.client.post(
            f"/v2/models/{MODEL}/infer",
            data=req.body,
            headers=req.headers,
            name="v2 infer (binary)",
        )

    @task(1)
    def infer_json(self) -> None:
        req = next(self._json)
        self.client.post(
            f"/v2/models/{MODEL}/infer", data=req.body, headers=req.headers, name="v2 infer (json)"
        )
