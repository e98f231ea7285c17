"""Exercises the generated Python clients against a running stack: a user, an order and its payment
written through the command API (and a stock adjustment through the batch endpoint), then read back
through the query API with the consistency tokens. Exits non-zero, saying what differed, on a mismatch.

    COMMAND_URL=http://127.0.0.1:8081 QUERY_URL=http://127.0.0.1:8082 python check.py
"""

import os
import sys
import time
import uuid

from eventline_command_client import AuthenticatedClient as AuthenticatedCommandClient
from eventline_command_client import Client as CommandClient
from eventline_command_client.api.batch import batch
from eventline_command_client.api.orders import place_order, settle_payment
from eventline_command_client.api.users import create_user
from eventline_command_client.models import (
    Accepted,
    BatchAdjustInventoryAdd,
    BatchAdjustInventoryAddAdjustmentType,
    BatchAdjustInventoryAddType,
    BatchAdjustInventoryRemove,
    BatchAdjustInventoryRemoveAdjustmentType,
    BatchAdjustInventoryRemoveType,
    BatchRequest,
    CreateUser,
    Currency,
    OrderLine,
    PlaceOrder,
    SettlePayment,
)
from eventline_query_client import AuthenticatedClient as AuthenticatedQueryClient
from eventline_query_client import Client as QueryClient
from eventline_query_client.api.inventory import get_stock
from eventline_query_client.api.orders import get_order, list_orders_by_status, order_history
from eventline_query_client.api.users import get_user
from eventline_query_client.models import (
    HistoryPage,
    ListOrdersByStatusStatus,
    Order,
    OrderPage,
    OrderStatus,
    OrderHistoryDirection,
    PaymentStatus,
    Stock,
    User,
)


def expect_equal(what, actual, expected):
    if actual != expected:
        sys.exit(f"python client: {what}: expected {expected!r}, got {actual!r}")


def accepted(what, response, kind=Accepted):
    if not isinstance(response.parsed, kind):
        sys.exit(f"python client: {what}: {response.status_code} {response.content!r}")
    return response.parsed


def token_of(response):
    token = response.headers.get("Consistency-Token")
    if not token:
        sys.exit("python client: no Consistency-Token header")
    return token


# API_TOKEN: a bearer token with the `write` and `read` scopes (a static token or a JWT); without it
# the clients send none, as a stack with unauthenticated local use allows.
API_TOKEN = os.environ.get("API_TOKEN")
COMMAND_URL = os.environ.get("COMMAND_URL", "http://127.0.0.1:8081")
QUERY_URL = os.environ.get("QUERY_URL", "http://127.0.0.1:8082")
if API_TOKEN:
    commands = AuthenticatedCommandClient(base_url=COMMAND_URL, token=API_TOKEN)
    queries = AuthenticatedQueryClient(base_url=QUERY_URL, token=API_TOKEN)
else:
    commands = CommandClient(base_url=COMMAND_URL)
    queries = QueryClient(base_url=QUERY_URL)

email = f"py-{uuid.uuid4()}@example.com"
created = create_user.sync_detailed(
    client=commands, body=CreateUser(email=email, first_name="Guido", last_name="Python")
)
user_id = accepted("POST /users", created).user_id

placed = place_order.sync_detailed(
    client=commands,
    body=PlaceOrder(
        user_id=user_id,
        currency=Currency.USD,
        items=[OrderLine(sku="PY-MUG", quantity=3, price="4.20")],
    ),
)
order = accepted("POST /orders", placed)
expect_equal("order total", order.total_amount, "12.60")

settled = settle_payment.sync_detailed(
    order.order_id,
    client=commands,
    body=SettlePayment(amount="12.60", currency=Currency.USD, payment_method="bank_transfer"),
)
payment_id = accepted("POST /orders/{orderId}/payments", settled).payment_id

sku = f"PY-{uuid.uuid4().hex[:12]}"
restocked = batch.sync_detailed(
    client=commands,
    body=BatchRequest(
        commands=[
            # Each adjustment type has a schema (and so a class) of its own.
            BatchAdjustInventoryAdd(type_=BatchAdjustInventoryAddType.ADJUSTINVENTORY, sku=sku,
                                    adjustment_type=BatchAdjustInventoryAddAdjustmentType.ADD,
                                    quantity=5, reason="restock"),
            BatchAdjustInventoryRemove(type_=BatchAdjustInventoryRemoveType.ADJUSTINVENTORY, sku=sku,
                                       adjustment_type=BatchAdjustInventoryRemoveAdjustmentType.REMOVE,
                                       quantity=2, reason="sale"),
        ]
    ),
)

# Tokens join with commas (the highest position per partition wins): one token for the whole story.
token = ",".join(token_of(r) for r in (created, placed, settled, restocked))

read_order = accepted(
    "GET /orders/{id}", get_order.sync_detailed(order.order_id, client=queries,
                                                 consistency_token=token), Order)
expect_equal("order status", read_order.status, OrderStatus.PAID)
expect_equal("order items", [(i.sku, i.quantity, i.price) for i in read_order.items],
             [("PY-MUG", 3, "4.20")])
payment = read_order.payment
expect_equal("payment", (payment.payment_id, payment.amount, payment.payment_method, payment.status),
             (payment_id, "12.60", "bank_transfer", PaymentStatus.COMPLETED))

# Its history, newest first, and the order as it was before the payment.
history = accepted("GET /orders/{id}/history", order_history.sync_detailed(
    order.order_id, client=queries, direction=OrderHistoryDirection.BACKWARDS, consistency_token=token), HistoryPage)
expect_equal("order history", [(e.to_dict()["type"], e.version) for e in history.events],
             [("PaymentSettled", 2), ("OrderPlaced", 1)])
placed_then = accepted("GET /orders/{id}?asOf=1", get_order.sync_detailed(
    order.order_id, client=queries, as_of=1, consistency_token=token), Order)
expect_equal("order as of version 1", placed_then.status, OrderStatus.AWAITING_PAYMENT)

user = accepted("GET /users/{id}", get_user.sync_detailed(user_id, client=queries,
                                                          consistency_token=token), User)
expect_equal("user email", user.email, email)
expect_equal("user orders", [(o.order_id, o.status) for o in user.orders],
             [(order.order_id, OrderStatus.PAID)])
expect_equal("user totalSpent", user.total_spent.to_dict(), {"USD": "12.60"})

# The user's paid orders, from the orders-by-status projection. Right after a deploy that added it,
# that projection may still be catching up with the log for the first time (503 with Retry-After).
for _ in range(30):
    listed = list_orders_by_status.sync_detailed(client=queries, status=ListOrdersByStatusStatus.PAID, user_id=user_id,
                                       consistency_token=token)
    if listed.status_code != 503:
        break
    time.sleep(1)
page = accepted("GET /orders?status=paid&userId=", listed, OrderPage)
expect_equal("paid orders of the user", [(o.order_id, o.total_amount) for o in page.orders],
             [(order.order_id, "12.60")])

stock = accepted("GET /inventory/{sku}", get_stock.sync_detailed(sku, client=queries,
                                                                consistency_token=token), Stock)
expect_equal("stock", stock.quantity, 3)

print(f"python client: user {user_id}, order {order.order_id}, payment {payment_id}, stock of {sku} read back")
