-- Beacon's telemetry tables, owned by the worker.
--
-- spans: every span, kept for waterfalls. One row per (trace_id, span_id);
-- a redelivered span is dropped by ON CONFLICT DO NOTHING.
-- llm_calls: one row per LLM call span (a span with gen_ai.operation.name),
-- with the GenAI fields pulled out into typed columns.

CREATE TABLE spans (
    trace_id            bytea            NOT NULL,
    span_id             bytea            NOT NULL,
    parent_span_id      bytea,
    tenant              text             NOT NULL,
    service_name        text             NOT NULL DEFAULT '',
    name                text             NOT NULL,
    kind                smallint         NOT NULL DEFAULT 0,
    start_time          timestamptz      NOT NULL,
    end_time            timestamptz      NOT NULL,
    duration_ms         double precision NOT NULL,
    status_code         smallint         NOT NULL DEFAULT 0,  -- 0 unset, 1 ok, 2 error
    status_message      text             NOT NULL DEFAULT '',
    attributes          jsonb            NOT NULL DEFAULT '{}'::jsonb,
    resource_attributes jsonb            NOT NULL DEFAULT '{}'::jsonb,
    ingested_at         timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, span_id)
);

CREATE INDEX spans_tenant_start_idx ON spans (tenant, start_time);

CREATE TABLE llm_calls (
    trace_id           bytea            NOT NULL,
    span_id            bytea            NOT NULL,
    tenant             text             NOT NULL,
    start_time         timestamptz      NOT NULL,
    latency_ms         double precision NOT NULL,
    ttft_ms            double precision,
    operation          text             NOT NULL,
    provider           text             NOT NULL,
    model              text             NOT NULL,
    response_model     text,
    input_tokens       bigint,
    output_tokens      bigint,
    cost_usd           numeric(20, 10),
    status             text             NOT NULL,  -- complete, refused, cancelled, error
    error_type         text,
    finish_reasons     text[],
    conversation_id    text,
    prompt_preview     text,
    completion_preview text,
    redaction_counts   jsonb            NOT NULL DEFAULT '{}'::jsonb,
    usage_estimated    boolean          NOT NULL DEFAULT false,
    simulated          boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (trace_id, span_id)
);

-- Window queries per tenant read only this index (index-only scans): the
-- percentiles, throughput, error rate and cost queries need no heap access.
CREATE INDEX llm_calls_tenant_start_idx ON llm_calls (tenant, start_time)
    INCLUDE (model, provider, latency_ms, ttft_ms, status, error_type,
             input_tokens, output_tokens, cost_usd);

CREATE INDEX llm_calls_conversation_idx ON llm_calls (tenant, conversation_id)
    WHERE conversation_id IS NOT NULL;
