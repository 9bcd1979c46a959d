-- One row per request: the usage.Record the gateway produced for it. The
-- request id is the idempotency key, so a retried write is a no-op. Times are
-- Unix nanoseconds (UTC); durations are nanoseconds.
CREATE TABLE usage (
	request_id          TEXT    NOT NULL PRIMARY KEY,
	time_ns             INTEGER NOT NULL,
	account             TEXT    NOT NULL,
	project             TEXT    NOT NULL,
	provider            TEXT    NOT NULL,
	model               TEXT    NOT NULL,
	operation           TEXT    NOT NULL,
	status              TEXT    NOT NULL,
	http_status         INTEGER NOT NULL,
	reason              TEXT    NOT NULL,
	stream              INTEGER NOT NULL CHECK (stream IN (0, 1)),
	input_tokens        INTEGER NOT NULL,
	cached_input_tokens INTEGER NOT NULL,
	cache_write_tokens  INTEGER NOT NULL,
	output_tokens       INTEGER NOT NULL,
	reasoning_tokens    INTEGER NOT NULL,
	estimated           INTEGER NOT NULL CHECK (estimated IN (0, 1)),
	latency_ns          INTEGER NOT NULL,
	latency_ms          INTEGER NOT NULL
) STRICT;

-- Listing is by time; usage reports are per account over a time range.
CREATE INDEX usage_by_time ON usage (time_ns, request_id);
CREATE INDEX usage_by_account_time ON usage (account, time_ns);
