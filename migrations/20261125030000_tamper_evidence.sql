-- Tamper evidence for the event store.
--
-- Each event carries `hash` = SHA-256(previous event's hash || canonical content), chained per
-- aggregate and computed by the database at insert time, so no writer can forget it. The
-- canonical content is every stored field, each written as `octet_length:value;` so that no two
-- different events share one (the verifier in infrastructure/src/audit.rs recomputes it without
-- this function). The first event of an aggregate chains from the empty string.
--
-- The table is append-only: UPDATE, DELETE and TRUNCATE are refused. Erasing a caller's data will
-- delete their key (crypto-shredding), never an event.

CREATE FUNCTION event_canonical_field(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    RETURN octet_length(value)::text || ':' || value || ';';

CREATE FUNCTION event_content(aggregate_type text, aggregate_id text, sequence bigint,
                              event_type text, event_version text, payload json, metadata json)
    RETURNS bytea
    LANGUAGE sql IMMUTABLE
    RETURN convert_to(
        event_canonical_field(aggregate_type) || event_canonical_field(aggregate_id) ||
        event_canonical_field(sequence::text) || event_canonical_field(event_type) ||
        event_canonical_field(event_version) || event_canonical_field(payload::text) ||
        event_canonical_field(metadata::text),
        'UTF8');

ALTER TABLE events ADD COLUMN hash bytea;

-- Chain what is already stored.
DO $$
DECLARE
    e    record;
    prev bytea;
    last text := NULL;
BEGIN
    FOR e IN SELECT * FROM events ORDER BY aggregate_type, aggregate_id, sequence LOOP
        IF last IS DISTINCT FROM e.aggregate_type || '/' || e.aggregate_id THEN
            prev := ''::bytea;
            last := e.aggregate_type || '/' || e.aggregate_id;
        END IF;
        prev := sha256(prev || event_content(e.aggregate_type, e.aggregate_id, e.sequence,
                                              e.event_type, e.event_version, e.payload, e.metadata));
        UPDATE events SET hash = prev
         WHERE aggregate_type = e.aggregate_type AND aggregate_id = e.aggregate_id
           AND sequence = e.sequence;
    END LOOP;
END $$;

ALTER TABLE events ALTER COLUMN hash SET NOT NULL;

CREATE FUNCTION events_chain() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    prev bytea;
BEGIN
    SELECT hash INTO prev FROM events
     WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id
       AND sequence = NEW.sequence - 1;
    IF prev IS NULL THEN
        IF EXISTS (SELECT 1 FROM events
                    WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id
                      AND sequence < NEW.sequence) THEN
            RAISE EXCEPTION 'event % of %/% does not follow the last stored event',
                NEW.sequence, NEW.aggregate_type, NEW.aggregate_id;
        END IF;
        prev := ''::bytea;
    END IF;
    NEW.hash := sha256(prev || event_content(NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
                                             NEW.event_type, NEW.event_version, NEW.payload,
                                             NEW.metadata));
    RETURN NEW;
END $$;

CREATE TRIGGER events_chain BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_chain();

CREATE FUNCTION events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();
