-- A schema rich in types, for round-trip fidelity tests.
CREATE EXTENSION IF NOT EXISTS plpgsql;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'application schema ✓';
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy 😀');
CREATE DOMAIN app.positive AS numeric CHECK (VALUE > 0);
CREATE TYPE app.pair AS (a int, b text);
CREATE SEQUENCE app.weird_seq INCREMENT BY -7 MINVALUE -9223372036854775808 MAXVALUE 100 START 99 CYCLE;
SELECT setval('app.weird_seq', -1234567890123, true);

CREATE TABLE app.everything (
    id bigserial PRIMARY KEY,
    j jsonb,
    js json,
    b bytea,
    arr int[],
    tarr text[][],
    n numeric(30, 10),
    big numeric,
    ts timestamptz,
    t text,
    m app.mood,
    p app.positive,
    pr app.pair,
    iv interval,
    u uuid,
    ip inet,
    rng int4range,
    flag boolean,
    f8 double precision
);
COMMENT ON TABLE app.everything IS 'every type we care about';
COMMENT ON COLUMN app.everything.t IS 'unicode: ünïcødé 日本語 🎉';

INSERT INTO app.everything (j, js, b, arr, tarr, n, big, ts, t, m, p, pr, iv, u, ip, rng, flag, f8)
SELECT
    jsonb_build_object('k', i, 'nested', jsonb_build_array(1, 'two', null, true), 'emoji', '🚀'),
    ('{"raw":  ' || i || ', "dup": 1, "dup": 2}')::json,
    (SELECT string_agg(set_byte('\x00'::bytea, 0, (g + i) % 256), ''::bytea) FROM generate_series(0, 255) g),
    ARRAY[i, -i, 0, NULL],
    ARRAY[ARRAY['a', 'b'], ARRAY['c"q', NULL]],
    i * 1.0123456789,
    power(10::numeric, 40) + i,
    timestamptz '2026-03-29 01:30:00+00' + (i || ' hours')::interval,
    CASE WHEN i % 10 = 0 THEN NULL ELSE 'row ' || i || E' tab\t newline\n quote'' backslash\\ 😀 ñ' END,
    (ARRAY['sad', 'ok', 'happy 😀'])[1 + i % 3]::app.mood,
    i + 0.5,
    ROW(i, 'x' || i)::app.pair,
    (i || ' days 3 hours')::interval,
    md5(i::text)::uuid,
    ('10.0.' || (i % 255) || '.1/24')::inet,
    int4range(i, i + 10),
    i % 2 = 0,
    CASE WHEN i = 1 THEN 'NaN'::float8 WHEN i = 2 THEN '-Infinity'::float8 ELSE i / 3.0 END
FROM generate_series(1, 500) i;
INSERT INTO app.everything (id) VALUES (100000);  -- a row of NULLs

CREATE TABLE app.parent (id int PRIMARY KEY, label text);
CREATE TABLE app.child (id int PRIMARY KEY, parent_id int REFERENCES app.parent(id) ON DELETE CASCADE,
                        note text UNIQUE);
INSERT INTO app.parent SELECT i, 'p' || i FROM generate_series(1, 50) i;
INSERT INTO app.child SELECT i, 1 + i % 50, 'note ' || i FROM generate_series(1, 200) i;

CREATE TABLE app.events (id int, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX ON app.events (at);
INSERT INTO app.events SELECT i, date '2025-06-01' + i, 'e' || i FROM generate_series(1, 400) i;

CREATE VIEW app.happy AS SELECT id, t FROM app.everything WHERE m = 'happy 😀';
CREATE MATERIALIZED VIEW app.mood_counts AS SELECT m, count(*) AS n FROM app.everything GROUP BY m;

CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.label := upper(NEW.label); RETURN NEW; END $$;
CREATE TRIGGER parent_touch BEFORE INSERT OR UPDATE ON app.parent FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
COMMENT ON FUNCTION app.add(int, int) IS 'adds';

SELECT lo_from_bytea(424242, convert_to('large object payload 🎈', 'UTF8'));
COMMENT ON LARGE OBJECT 424242 IS 'a large object';

CREATE TABLE public.plain_table (id int PRIMARY KEY, v text);
INSERT INTO public.plain_table SELECT i, repeat('x', i % 100) FROM generate_series(1, 1000) i;
