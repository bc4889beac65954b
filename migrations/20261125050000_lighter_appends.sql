-- Appends at the database's pace.
--
-- 1. No NOTIFY in the appending transaction. PostgreSQL serialises the commits of notifying
--    transactions on one lock held through the WAL flush, so concurrent appends stopped sharing
--    flushes: with pgbench on this schema, appends ran at less than half the rate with the
--    trigger as without it. The appending process wakes its own subscription runners in memory
--    and tells other processes with one NOTIFY per burst, after the commit
--    (infrastructure/src/appended.rs); every runner still polls.
DROP TRIGGER events_appended ON events;
DROP FUNCTION notify_events_appended();

-- 2. The chain trigger computes the same hash (the verifier and every stored hash are unchanged),
--    with the canonical content written out inline: called per row from the trigger, the SQL
--    function event_content() was not inlined and cost a third of the insert rate. It stays, as
--    the reference the trigger's expression is tested against.
CREATE OR REPLACE FUNCTION events_chain() RETURNS trigger
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
    -- event_content(), inline: each field as `octet_length:value;`.
    NEW.hash := sha256(prev || convert_to(
        octet_length(NEW.aggregate_type)::text || ':' || NEW.aggregate_type || ';' ||
        octet_length(NEW.aggregate_id)::text || ':' || NEW.aggregate_id || ';' ||
        octet_length(NEW.sequence::text)::text || ':' || NEW.sequence::text || ';' ||
        octet_length(NEW.event_type)::text || ':' || NEW.event_type || ';' ||
        octet_length(NEW.event_version)::text || ':' || NEW.event_version || ';' ||
        octet_length(NEW.payload::text)::text || ':' || NEW.payload::text || ';' ||
        octet_length(NEW.metadata::text)::text || ':' || NEW.metadata::text || ';',
        'UTF8'));
    RETURN NEW;
END $$;
