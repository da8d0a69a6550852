-- Details of a finished generation, so that ResumeGeneration can replay the
-- same `completed` event the live stream sent, and a rule that a
-- conversation has at most one generation streaming at a time.

ALTER TABLE chat_messages
    ADD COLUMN provider                 text    NOT NULL DEFAULT '',
    ADD COLUMN finish_reason            text    NOT NULL DEFAULT '',
    ADD COLUMN usage_estimated          boolean NOT NULL DEFAULT false,
    ADD COLUMN time_to_first_token_ms   double precision,
    ADD COLUMN history_messages_dropped integer NOT NULL DEFAULT 0,
    ADD COLUMN trace_id                 text    NOT NULL DEFAULT '';

-- A database written before the one-streaming-row rule can hold several
-- streaming answers in one conversation, which the unique index below
-- would refuse. Keep the newest of them (the last inserted) streaming and
-- mark the older ones failed; the chat process's start-up recovery then
-- deals with the newest as with any row left streaming. (This file was
-- amended before any release; a database that applied its earlier text
-- must be recreated, since applied files are checksummed.)
UPDATE chat_messages m
   SET status = 'failed',
       failure_reason = 'a newer answer in the same conversation was '
                        'streaming when the schema was upgraded',
       update_time = now()
 WHERE m.status = 'streaming'
   AND EXISTS (SELECT 1
                 FROM chat_messages newer
                WHERE newer.conversation_id = m.conversation_id
                  AND newer.status = 'streaming'
                  AND newer.position > m.position);

-- Rows written before this migration: a finished assistant answer's finish
-- reason follows from its status.
UPDATE chat_messages
   SET finish_reason = CASE status
           WHEN 'complete'  THEN 'stop'
           WHEN 'cancelled' THEN 'cancelled'
           WHEN 'refused'   THEN 'refused'
           WHEN 'failed'    THEN 'error'
           ELSE '' END
 WHERE role = 'assistant';

CREATE UNIQUE INDEX chat_messages_one_streaming_per_conversation
    ON chat_messages (conversation_id) WHERE status = 'streaming';
