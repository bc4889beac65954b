-- Durable subscriptions over the event store, and the job queue the pipeline's slow work runs on.

-- One row per consumer (a projection, the pipeline): how far it has read. A consumer writes its
-- effects and advances this row in one transaction, so each event takes effect exactly once.
CREATE TABLE subscription_checkpoints
(
    name          text PRIMARY KEY,
    last_tx_id    xid8        NOT NULL DEFAULT '0',
    last_position bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Wakes subscription runners when events are appended (delivered at commit); they also poll, so a
-- lost notification only delays them.
CREATE FUNCTION notify_events_appended() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('hotline_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_appended
    AFTER INSERT ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION notify_events_appended();

-- Slow work (downloads, speech-to-text, the language model, Twilio's REST API) never runs inside a
-- subscription: the subscription enqueues a job here in its checkpoint transaction, and workers on
-- any instance claim jobs with SKIP LOCKED under a lease.
CREATE TABLE jobs
(
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id      text        NOT NULL,
    turn         integer     NOT NULL,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    run_at       timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    locked_by    text,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- One job per call, turn and kind: a replayed event cannot enqueue the work twice.
    UNIQUE (call_id, turn, kind)
);

CREATE INDEX jobs_claimable ON jobs (run_at) WHERE status IN ('pending', 'running');

-- Wakes workers when a job is enqueued.
CREATE FUNCTION notify_job_enqueued() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('hotline_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_enqueued
    AFTER INSERT ON jobs
    FOR EACH STATEMENT
EXECUTE FUNCTION notify_job_enqueued();
