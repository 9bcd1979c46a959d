-- Accounts, projects, credits and hourly roll-ups, as in the SQLite ledger's
-- 0002. Money is in integer micro-credits; times are Unix nanoseconds (UTC);
-- roll-up hours are the Unix seconds at the start of the hour.

CREATE TABLE accounts (
	id         text    COLLATE "C" NOT NULL PRIMARY KEY,
	plan       text    NOT NULL,
	enabled    boolean NOT NULL,
	balance    bigint  NOT NULL,
	created_ns bigint  NOT NULL
);

-- Per-model tokens-per-minute limits replacing the plan's.
CREATE TABLE account_tpm_overrides (
	account text   COLLATE "C" NOT NULL REFERENCES accounts (id),
	model   text   COLLATE "C" NOT NULL,
	tpm     bigint NOT NULL CHECK (tpm > 0),
	PRIMARY KEY (account, model)
);

-- Every change to a balance other than a usage debit. With usage.credits
-- they account for the balance.
CREATE TABLE credit_entries (
	id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	account       text   COLLATE "C" NOT NULL REFERENCES accounts (id),
	time_ns       bigint NOT NULL,
	amount        bigint NOT NULL,
	balance_after bigint NOT NULL,
	reason        text   NOT NULL
);
CREATE INDEX credit_entries_by_account ON credit_entries (account, id);

CREATE TABLE projects (
	id         text    COLLATE "C" NOT NULL PRIMARY KEY,
	account    text    COLLATE "C" NOT NULL REFERENCES accounts (id),
	activated  boolean NOT NULL,
	rpm        bigint  NOT NULL CHECK (rpm >= 0),
	tpm        bigint  NOT NULL CHECK (tpm >= 0),
	created_ns bigint  NOT NULL
);
CREATE INDEX projects_by_account ON projects (account, id);

-- Usage per account, project, model and hour, updated in the transaction
-- that inserts each usage row. requests counts every record, rejected ones
-- included.
CREATE TABLE usage_hourly (
	account             text   COLLATE "C" NOT NULL,
	project             text   COLLATE "C" NOT NULL,
	model               text   COLLATE "C" NOT NULL,
	hour                bigint NOT NULL,
	requests            bigint NOT NULL,
	input_tokens        bigint NOT NULL,
	cached_input_tokens bigint NOT NULL,
	cache_write_tokens  bigint NOT NULL,
	output_tokens       bigint NOT NULL,
	reasoning_tokens    bigint NOT NULL,
	credits             bigint NOT NULL,
	PRIMARY KEY (account, project, model, hour)
);
CREATE INDEX usage_hourly_by_account_hour ON usage_hourly (account, hour);

-- Records with status 'rejected', by reason.
CREATE TABLE usage_hourly_rejections (
	account    text   COLLATE "C" NOT NULL,
	project    text   COLLATE "C" NOT NULL,
	model      text   COLLATE "C" NOT NULL,
	hour       bigint NOT NULL,
	reason     text   COLLATE "C" NOT NULL,
	rejections bigint NOT NULL,
	PRIMARY KEY (account, project, model, hour, reason)
);
