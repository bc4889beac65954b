-- A failed job's stage (`transcription`) and class of failure (`http_503`), each in its own
-- column, written from the typed error: the worker no longer parses them back out of
-- `last_error`, which is still written (`stage: class`) for whoever reads the table.
ALTER TABLE jobs
    ADD COLUMN last_error_stage text,
    ADD COLUMN last_error_class text;
