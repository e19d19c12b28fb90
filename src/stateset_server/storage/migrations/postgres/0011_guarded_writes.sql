-- An optimistic write (a change decided against a state read outside its transaction) is sent as one
-- statement whose version-checked UPDATE must have matched a row; this makes the statement fail,
-- and so write nothing, when it did not. SQLSTATE SS002 is ours alone (storage/postgres.py).
CREATE FUNCTION stateset_still_current(present BOOLEAN) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF NOT present THEN
        RAISE EXCEPTION 'stateset: the row changed since it was read' USING ERRCODE = 'SS002';
    END IF;
    RETURN present;
END
$$;
