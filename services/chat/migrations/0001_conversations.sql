-- Conversations and their messages, owned by the chat service.
--
-- Every query filters conversations by tenant; messages reach a tenant only
-- through their conversation.

CREATE TABLE chat_conversations (
    id            uuid        PRIMARY KEY,
    tenant        text        NOT NULL,
    title         text        NOT NULL DEFAULT '',
    model         text        NOT NULL,
    system_prompt text        NOT NULL DEFAULT '',
    create_time   timestamptz NOT NULL DEFAULT now(),
    update_time   timestamptz NOT NULL DEFAULT now()
);

-- ListConversations pages newest first with a (create_time, id) keyset.
CREATE INDEX chat_conversations_tenant_newest
    ON chat_conversations (tenant, create_time DESC, id DESC);

CREATE TABLE chat_messages (
    id              uuid        PRIMARY KEY,
    conversation_id uuid        NOT NULL
                    REFERENCES chat_conversations (id) ON DELETE CASCADE,
    -- Insertion order within the whole table; orders a conversation's turns.
    position        bigint      GENERATED ALWAYS AS IDENTITY,
    role            text        NOT NULL
                    CHECK (role IN ('system', 'user', 'assistant')),
    content         text        NOT NULL DEFAULT '',
    status          text        NOT NULL
                    CHECK (status IN ('streaming', 'complete', 'cancelled',
                                      'refused', 'failed')),
    model           text        NOT NULL DEFAULT '',
    input_tokens    integer     NOT NULL DEFAULT 0,
    output_tokens   integer     NOT NULL DEFAULT 0,
    cost_usd        numeric     NOT NULL DEFAULT 0,
    failure_reason  text        NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX chat_messages_conversation_order
    ON chat_messages (conversation_id, position);
