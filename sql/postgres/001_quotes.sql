-- Quote snapshots per market. {table} and {index} are filled in by the code with
-- psycopg.sql.Identifier (never by pasting config strings). Idempotent.
--
-- No primary key on purpose: raw imports may hold duplicate timestamps and are cleaned later in the
-- pipeline, so the store keeps every row it is given. Every read and every replace-range delete is
-- "one market, a ts range", which the (exchange, pair, ts) btree serves; it also yields ts order.
CREATE TABLE IF NOT EXISTS {table} (
    exchange text NOT NULL,
    pair text NOT NULL,
    ts timestamptz NOT NULL,
    price double precision NOT NULL,
    bid double precision NULL,
    ask double precision NULL,
    volume double precision NULL
);

CREATE INDEX IF NOT EXISTS {index} ON {table} (exchange, pair, ts);
