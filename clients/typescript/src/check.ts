// Exercises the generated TypeScript clients against a running stack: a user, an order and its
// payment written through the command API, then read back through the query API with the
// consistency tokens. Exits non-zero, saying what differed, if anything does not match.
//
//   COMMAND_URL=http://127.0.0.1:8081 QUERY_URL=http://127.0.0.1:8082 API_TOKEN=… node dist/check.js
//
// API_TOKEN is a bearer token with the `write` and `read` scopes (a static token or a JWT); without
// it the clients send none, as a stack with unauthenticated local use allows.
import createClient from "openapi-fetch";
import type { paths as CommandPaths } from "./generated/command.js";
import type { paths as QueryPaths } from "./generated/query.js";

const headers: Record<string, string> = process.env.API_TOKEN ? { Authorization: `Bearer ${process.env.API_TOKEN}` } : {};
const commands = createClient<CommandPaths>({ baseUrl: process.env.COMMAND_URL ?? "http://127.0.0.1:8081", headers });
const queries = createClient<QueryPaths>({ baseUrl: process.env.QUERY_URL ?? "http://127.0.0.1:8082", headers });

function expectEqual(what: string, actual: unknown, expected: unknown): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

function tokenOf(response: Response): string {
  const token = response.headers.get("Consistency-Token");
  if (!token) throw new Error(`${response.url}: no Consistency-Token header`);
  return token;
}

function accepted<T>(what: string, result: { data?: T; error?: unknown; response: Response }): T {
  if (result.data === undefined) {
    throw new Error(`${what}: ${result.response.status} ${JSON.stringify(result.error)}`);
  }
  return result.data;
}

const email = `ts-${crypto.randomUUID()}@example.com`;
const created = await commands.POST("/users", { body: { email, firstName: "Ada", lastName: "Script" } });
const userId = accepted("POST /users", created).userId;
if (!userId) throw new Error("POST /users: no userId");

const placed = await commands.POST("/orders", {
  body: {
    userId,
    currency: "EUR",
    items: [
      { sku: "TS-BOOK", quantity: 2, price: "9.99" },
      { sku: "TS-PEN", quantity: 1, price: "0.50" },
    ],
  },
});
const order = accepted("POST /orders", placed);
expectEqual("order total", order.totalAmount, "20.48");
const orderId = order.orderId;
if (!orderId) throw new Error("POST /orders: no orderId");

const settled = await commands.POST("/orders/{orderId}/payments", {
  params: { path: { orderId } },
  body: { amount: "20.48", currency: "EUR", paymentMethod: "card" },
});
const paymentId = accepted("POST /orders/{orderId}/payments", settled).paymentId;

// Tokens join with commas (the highest position per partition wins): one token for the whole story.
const token = [created, placed, settled].map((result) => tokenOf(result.response)).join(",");

const readOrder = await queries.GET("/orders/{id}", {
  params: { path: { id: orderId }, header: { "Consistency-Token": token } },
});
const readBack = accepted("GET /orders/{id}", readOrder);
expectEqual("order status", readBack.status, "paid");
expectEqual("order user", readBack.userId, userId);
expectEqual("order items", readBack.items, [
  { sku: "TS-BOOK", quantity: 2, price: "9.99" },
  { sku: "TS-PEN", quantity: 1, price: "0.50" },
]);
const payment = readBack.payment;
expectEqual("payment", [payment?.paymentId, payment?.amount, payment?.paymentMethod, payment?.status], [
  paymentId,
  "20.48",
  "card",
  "completed",
]);

// Its history, newest first, and the order as it was before the payment.
const readHistory = await queries.GET("/orders/{id}/history", {
  params: { path: { id: orderId }, query: { direction: "backwards" }, header: { "Consistency-Token": token } },
});
const history = accepted("GET /orders/{id}/history", readHistory);
expectEqual("order history", history.events.map((e) => [e.type, e.version]), [
  ["PaymentSettled", 2],
  ["OrderPlaced", 1],
]);
const readPlaced = await queries.GET("/orders/{id}", {
  params: { path: { id: orderId }, query: { asOf: 1 }, header: { "Consistency-Token": token } },
});
expectEqual("order as of version 1", accepted("GET /orders/{id}?asOf=1", readPlaced).status, "awaiting_payment");

const readUser = await queries.GET("/users/{id}", {
  params: { path: { id: userId }, header: { "Consistency-Token": token } },
});
const user = accepted("GET /users/{id}", readUser);
expectEqual("user email", user.email, email);
expectEqual("user orderCount", user.orderCount, 1);
expectEqual("user orders", user.orders.map((o) => [o.orderId, o.totalAmount, o.status]), [[orderId, "20.48", "paid"]]);
expectEqual("user totalSpent", user.totalSpent, { EUR: "20.48" });

// The user's paid orders, from the orders-by-status projection. Right after a deploy that added it,
// that projection may still be catching up with the log for the first time (503 with Retry-After).
let listed = await queries.GET("/orders", {
  params: { query: { status: "paid", userId }, header: { "Consistency-Token": token } },
});
for (let tries = 0; listed.response.status === 503 && tries < 30; tries++) {
  await new Promise((resolve) => setTimeout(resolve, 1000));
  listed = await queries.GET("/orders", {
    params: { query: { status: "paid", userId }, header: { "Consistency-Token": token } },
  });
}
const page = accepted("GET /orders?status=paid&userId=", listed);
expectEqual("paid orders of the user", page.orders.map((o) => [o.orderId, o.totalAmount]), [[orderId, "20.48"]]);

console.log(`typescript client: user ${userId}, order ${orderId}, payment ${paymentId} read back`);
