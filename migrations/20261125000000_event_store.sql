-- The event store: postgres-es's own `events` and `snapshots` tables, so postgres-es reads and
-- writes them unchanged, plus three defaulted columns for durable subscriptions:
--   global_position: a total order of appends, for checkpoints;
--   tx_id:           the appending transaction, so a reader never skips rows of a transaction that
--                    is still in flight (read only below pg_snapshot_xmin of the current snapshot);
--   recorded_at:     when the database stored the event.
CREATE TABLE events
(
    aggregate_type  text                         NOT NULL,
    aggregate_id    text                         NOT NULL,
    sequence        bigint CHECK (sequence >= 0) NOT NULL,
    event_type      text                         NOT NULL,
    event_version   text                         NOT NULL,
    payload         json                         NOT NULL,
    metadata        json                         NOT NULL,
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    tx_id           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                  NOT NULL DEFAULT now(),
    -- The primary key is also the optimistic lock: two writers cannot append the same sequence.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_by_transaction ON events (tx_id, global_position);

-- Unused today (snapshots are off: a call's stream is short), kept so postgres-es's schema is whole.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
