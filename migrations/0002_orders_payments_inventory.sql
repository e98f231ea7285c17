-- Orders, payments and inventory. As everywhere in the read models, times come from the events.

-- One identity per database: scopes the projector's Redis dedup keys, so that keys remembered for
-- another database (or an earlier incarnation of this one) can never hide an event from it.
CREATE TABLE projection_identity (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    projection_id uuid        NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO projection_identity DEFAULT VALUES;

-- Orders, one row per OrderPlaced. `status` is 'paid' once a completed payment for the order exists,
-- whichever of the two was applied first.
CREATE TABLE orders (
    order_id      uuid        PRIMARY KEY,
    user_id       uuid        NOT NULL,
    currency      text        NOT NULL,
    total_amount  numeric     NOT NULL,
    status        text        NOT NULL CHECK (status IN ('awaiting_payment', 'paid')),
    placed_at     timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_event_id uuid        NOT NULL
);
-- A user's orders, most recent first (GET /users/{id}).
CREATE INDEX orders_by_user ON orders (user_id, placed_at DESC, order_id DESC);

CREATE TABLE order_items (
    order_id      uuid        NOT NULL,
    line_no       integer     NOT NULL,
    sku           text        NOT NULL,
    quantity      integer     NOT NULL,
    price         numeric     NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Payments, one row per PaymentSettled; an order may be paid by an order placed later in the log.
CREATE TABLE payments (
    payment_id    uuid        PRIMARY KEY,
    order_id      uuid        NOT NULL,
    amount        numeric     NOT NULL,
    currency      text        NOT NULL,
    payment_method text       NOT NULL,
    status        text        NOT NULL,
    settled_at    timestamptz NOT NULL,
    last_event_id uuid        NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id, settled_at DESC);

-- Stock per sku after every add, remove and set, in log order.
CREATE TABLE inventory (
    sku           text        PRIMARY KEY,
    quantity      bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_event_id uuid        NOT NULL
);
