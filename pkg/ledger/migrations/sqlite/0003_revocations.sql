-- Revoked gateway tokens, shared by every gateway on the ledger. A row is
-- kept until the token expires anyway (expires_ns); revoked_ns is when it
-- was revoked, which gateways poll by. Times are Unix nanoseconds (UTC).

CREATE TABLE revoked_tokens (
	token_id   TEXT    NOT NULL PRIMARY KEY,
	revoked_ns INTEGER NOT NULL,
	expires_ns INTEGER NOT NULL
) STRICT;
CREATE INDEX revoked_tokens_by_revoked ON revoked_tokens (revoked_ns);
CREATE INDEX revoked_tokens_by_expiry ON revoked_tokens (expires_ns);
