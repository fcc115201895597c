-- coolmq outbox: one row per message waiting for the broker's confirm.
CREATE TABLE IF NOT EXISTS coolmq_outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT, -- publish order
    id               TEXT    NOT NULL UNIQUE,           -- the message id, identical on every resend
    destination_kind TEXT    NOT NULL,                  -- 'queue' or 'topic'
    destination      TEXT    NOT NULL,
    body             BLOB    NOT NULL,
    headers          TEXT    NOT NULL,                  -- JSON object of coolmq header values
    content_type     TEXT,
    correlation_id   TEXT,
    reply_to         TEXT,
    kind             TEXT,
    priority         INTEGER,
    persistent       INTEGER NOT NULL,
    ttl_ms           INTEGER,
    timestamp_ms     INTEGER,
    created_at       INTEGER NOT NULL,                  -- ms since the epoch
    attempts         INTEGER NOT NULL DEFAULT 0,        -- failed publish attempts
    next_attempt_at  INTEGER NOT NULL,                  -- ms; not published before
    last_error       TEXT,
    parked           INTEGER NOT NULL DEFAULT 0,        -- 1: gave up, needs a human
    claimed_by       TEXT,                              -- relay holding the row (SQLite lease)
    claimed_until    INTEGER                            -- ms; lease end
);
CREATE INDEX IF NOT EXISTS coolmq_outbox_due ON coolmq_outbox (parked, next_attempt_at, seq);

-- coolmq inbox: ids of messages a consumer has processed, for idempotent handling.
CREATE TABLE IF NOT EXISTS coolmq_inbox (
    consumer     TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    processed_at INTEGER NOT NULL,                      -- ms since the epoch
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS coolmq_inbox_age ON coolmq_inbox (processed_at);
