-- Evaluation runs, owned by the underwriter. One row per run; the scorecard
-- and the PDF are kept whole so a run can be reread exactly as it was.
CREATE TABLE underwriter_runs (
    id            uuid PRIMARY KEY,
    tenant        text NOT NULL,
    state         text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    spec          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    scorecard     jsonb,
    report_pdf    bytea,
    error         text NOT NULL DEFAULT ''
);

CREATE INDEX underwriter_runs_tenant_created ON underwriter_runs (tenant, created_at DESC, id DESC);

-- One row per (run, model, temperature, guardrail arm): the index over time.
CREATE VIEW underwriter_model_indexes AS
SELECT r.id AS run_id,
       r.tenant,
       r.created_at,
       e ->> 'model' AS model,
       (e ->> 'temperature')::double precision AS temperature,
       (e ->> 'simulated')::boolean AS simulated,
       arm.key AS guardrail_arm,
       (arm.value ->> 'index')::double precision AS index,
       (arm.value -> 'index_ci' ->> 0)::double precision AS index_ci_low,
       (arm.value -> 'index_ci' ->> 1)::double precision AS index_ci_high,
       arm.value ->> 'tier' AS tier,
       (arm.value ->> 'tier_uncertain')::boolean AS tier_uncertain
FROM underwriter_runs r
CROSS JOIN LATERAL jsonb_array_elements(r.scorecard -> 'entries') AS e
CROSS JOIN LATERAL jsonb_each(e -> 'arms') AS arm
WHERE r.state = 'succeeded';
