-- One row per request: the usage.Record the gateway produced for it. The
-- request id is the idempotency key, so a retried write is a no-op. Times are
-- Unix nanoseconds (UTC) and durations nanoseconds, as in the SQLite ledger.
-- Ids and names collate bytewise ("C"), so that both backends order alike.
CREATE TABLE usage (
	request_id          text    COLLATE "C" NOT NULL PRIMARY KEY,
	time_ns             bigint  NOT NULL,
	account             text    COLLATE "C" NOT NULL,
	project             text    COLLATE "C" NOT NULL,
	provider            text    COLLATE "C" NOT NULL,
	model               text    COLLATE "C" NOT NULL,
	operation           text    NOT NULL,
	status              text    NOT NULL,
	http_status         bigint  NOT NULL,
	reason              text    NOT NULL,
	stream              boolean NOT NULL,
	input_tokens        bigint  NOT NULL,
	cached_input_tokens bigint  NOT NULL,
	cache_write_tokens  bigint  NOT NULL,
	output_tokens       bigint  NOT NULL,
	reasoning_tokens    bigint  NOT NULL,
	estimated           boolean NOT NULL,
	latency_ns          bigint  NOT NULL,
	latency_ms          bigint  NOT NULL,
	credits             bigint  NOT NULL,
	ttft_ns             bigint  NOT NULL
);

CREATE INDEX usage_by_time ON usage (time_ns, request_id);
CREATE INDEX usage_by_account_time ON usage (account, time_ns);
