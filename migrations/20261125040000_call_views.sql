-- The read side, projected from the event store by the `call_views` subscription (each event's
-- effect is committed with the subscription's checkpoint). `hotline replay` rebuilds all three
-- from the events and compares.

-- One row per call, for analysts: no full phone number, no transcript, no audio.
CREATE TABLE call_views
(
    call_id              uuid PRIMARY KEY,
    call_sid             text        NOT NULL,
    caller               text        NOT NULL, -- masked
    direction            text        NOT NULL,
    status               text        NOT NULL,
    started_at           timestamptz NOT NULL,
    ended_at             timestamptz,
    duration_secs        integer,
    turns                integer     NOT NULL,
    max_risk             text,
    max_risk_rank        smallint,             -- 0 none … 4 imminent, for "risk at least" filters
    escalated            boolean     NOT NULL,
    escalation_reason    text,
    outcome              text,
    mean_turn_latency_ms bigint,
    last_sequence        bigint      NOT NULL
);

CREATE INDEX call_views_by_start ON call_views (started_at DESC, call_id DESC);

-- One row per turn: the detail behind the auditor and supervisor roles (transcripts, replies).
CREATE TABLE call_turns
(
    call_id          uuid        NOT NULL,
    turn             integer     NOT NULL,
    recorded_at      timestamptz NOT NULL,
    recording_secs   integer,
    digits           text,
    transcript       text,
    reply            text,
    reply_source     text,
    risk_level       text,
    risk_unknown     boolean     NOT NULL,
    route            text,
    signals          jsonb       NOT NULL,
    screener_version text,
    model            text,
    timings          jsonb,
    played_via       text,
    played_at        timestamptz,
    latency_ms       bigint,
    failed_stages    jsonb       NOT NULL,
    choice           text,
    PRIMARY KEY (call_id, turn)
);

-- The fold's state per call, so the next event folds without re-reading the history.
CREATE TABLE call_projection_state
(
    call_id uuid PRIMARY KEY,
    state   jsonb NOT NULL
);
