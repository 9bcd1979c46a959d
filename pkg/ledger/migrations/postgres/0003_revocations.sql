-- Revoked gateway tokens, as in the SQLite ledger's 0003. A row is kept until
-- the token expires anyway (expires_ns); revoked_ns is when it was revoked,
-- which gateways poll by. Times are Unix nanoseconds (UTC).

CREATE TABLE revoked_tokens (
	token_id   text   COLLATE "C" NOT NULL PRIMARY KEY,
	revoked_ns bigint NOT NULL,
	expires_ns bigint NOT NULL
);
CREATE INDEX revoked_tokens_by_revoked ON revoked_tokens (revoked_ns);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_ns);
