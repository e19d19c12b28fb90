-- A write transaction whose work is one statement runs it without BEGIN and COMMIT (two round trips
-- fewer), which is atomic by itself; when its last part must have returned a row for the work to be
-- kept (an idempotency key taken), this makes the statement fail, and so write nothing, when it did
-- not. SQLSTATE SS001 is ours alone (storage/postgres.py).
CREATE FUNCTION stateset_require_row(present BOOLEAN) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF NOT present THEN
        RAISE EXCEPTION 'stateset: the statement''s required row is missing' USING ERRCODE = 'SS001';
    END IF;
    RETURN present;
END
$$;
