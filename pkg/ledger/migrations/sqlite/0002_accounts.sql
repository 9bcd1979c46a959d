-- Accounts, projects, credits and hourly roll-ups. Money is in integer
-- micro-credits; times are Unix nanoseconds (UTC); roll-up hours are the Unix
-- seconds at the start of the hour.

ALTER TABLE usage ADD COLUMN credits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage ADD COLUMN ttft_ns INTEGER NOT NULL DEFAULT 0;

CREATE TABLE accounts (
	id         TEXT    NOT NULL PRIMARY KEY,
	plan       TEXT    NOT NULL,
	enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
	balance    INTEGER NOT NULL,
	created_ns INTEGER NOT NULL
) STRICT;

-- Per-model tokens-per-minute limits replacing the plan's.
CREATE TABLE account_tpm_overrides (
	account TEXT    NOT NULL REFERENCES accounts (id),
	model   TEXT    NOT NULL,
	tpm     INTEGER NOT NULL CHECK (tpm > 0),
	PRIMARY KEY (account, model)
) STRICT;

-- Every change to a balance other than a usage debit. With usage.credits
-- they account for the balance.
CREATE TABLE credit_entries (
	id            INTEGER NOT NULL PRIMARY KEY,
	account       TEXT    NOT NULL REFERENCES accounts (id),
	time_ns       INTEGER NOT NULL,
	amount        INTEGER NOT NULL,
	balance_after INTEGER NOT NULL,
	reason        TEXT    NOT NULL
) STRICT;
CREATE INDEX credit_entries_by_account ON credit_entries (account, id);

CREATE TABLE projects (
	id         TEXT    NOT NULL PRIMARY KEY,
	account    TEXT    NOT NULL REFERENCES accounts (id),
	activated  INTEGER NOT NULL CHECK (activated IN (0, 1)),
	rpm        INTEGER NOT NULL CHECK (rpm >= 0),
	tpm        INTEGER NOT NULL CHECK (tpm >= 0),
	created_ns INTEGER NOT NULL
) STRICT;
CREATE INDEX projects_by_account ON projects (account, id);

-- Usage per account, project, model and hour, updated in the transaction
-- that inserts each usage row. requests counts every record, rejected ones
-- included.
CREATE TABLE usage_hourly (
	account             TEXT    NOT NULL,
	project             TEXT    NOT NULL,
	model               TEXT    NOT NULL,
	hour                INTEGER NOT NULL,
	requests            INTEGER NOT NULL,
	input_tokens        INTEGER NOT NULL,
	cached_input_tokens INTEGER NOT NULL,
	cache_write_tokens  INTEGER NOT NULL,
	output_tokens       INTEGER NOT NULL,
	reasoning_tokens    INTEGER NOT NULL,
	credits             INTEGER NOT NULL,
	PRIMARY KEY (account, project, model, hour)
) STRICT;
CREATE INDEX usage_hourly_by_account_hour ON usage_hourly (account, hour);

-- Records with status 'rejected', by reason.
CREATE TABLE usage_hourly_rejections (
	account    TEXT    NOT NULL,
	project    TEXT    NOT NULL,
	model      TEXT    NOT NULL,
	hour       INTEGER NOT NULL,
	reason     TEXT    NOT NULL,
	rejections INTEGER NOT NULL,
	PRIMARY KEY (account, project, model, hour, reason)
) STRICT;

-- Roll up what a ledger from before this migration already holds. Seconds
-- and hours round down, before 1970 too, as the Go code does.
INSERT INTO usage_hourly
SELECT account, project, model, s - ((s % 3600) + 3600) % 3600 AS hour, count(*), sum(input_tokens),
	sum(cached_input_tokens), sum(cache_write_tokens), sum(output_tokens), sum(reasoning_tokens), 0
FROM (SELECT *, (time_ns - ((time_ns % 1000000000) + 1000000000) % 1000000000) / 1000000000 AS s FROM usage)
GROUP BY account, project, model, hour;

INSERT INTO usage_hourly_rejections
SELECT account, project, model, s - ((s % 3600) + 3600) % 3600 AS hour,
	CASE reason WHEN '' THEN 'unspecified' ELSE reason END AS r, count(*)
FROM (SELECT *, (time_ns - ((time_ns % 1000000000) + 1000000000) % 1000000000) / 1000000000 AS s
	FROM usage WHERE status = 'rejected')
GROUP BY account, project, model, hour, r;
