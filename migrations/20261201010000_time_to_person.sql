-- The human handoff on the read side: when the first sign of risk came, when a person took the
-- call, the times between, and how the dials went. Rebuilt from the events by `hotline replay`.
ALTER TABLE call_views
    ADD COLUMN first_risk_at        timestamptz,
    ADD COLUMN person_at            timestamptz,
    ADD COLUMN time_to_person_ms    bigint,
    ADD COLUMN risk_to_person_ms    bigint,
    ADD COLUMN counselor_dials      integer NOT NULL DEFAULT 0,
    ADD COLUMN counselor_answers    integer NOT NULL DEFAULT 0,
    ADD COLUMN crisis_line_fallback boolean NOT NULL DEFAULT false,
    ADD COLUMN hung_up_waiting      boolean NOT NULL DEFAULT false;
