-- keygate's PostgreSQL store, first schema (issue 14).
--
-- One table per kind of record. Each row holds the record itself as `record jsonb`, in
-- the same versioned shape sled stores (`{"v":"1", ...}`), so both backends decode one
-- way (keygate-store's `table.rs`); the other columns copy out of the record only what
-- is looked up, ordered or filtered on. Secrets are what they are in sled: sealed JWEs
-- and SHA-256 hashes, never plaintext. Text keys are `COLLATE "C"`: ordered byte by
-- byte, as sled orders its keys, so pages walk in the same order on both backends.
--
-- There are no foreign keys on purpose: usage rows, grant owners and audit entries
-- outlive the person they name, and the store's own transactions (which lock the
-- person's row) keep the rest consistent.

-- Numbers sessions and audit entries (their `seq`), increasing across nodes.
CREATE SEQUENCE keygate_seq;

CREATE TABLE users (
    id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

-- A person's sealed OpenAI key (a JWE), filed under the person.
CREATE TABLE vault (
    user_id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

-- The operator's sealed key: at most one row.
CREATE TABLE operator_key (
    id text COLLATE "C" PRIMARY KEY CHECK (id = 'operator'),
    record jsonb NOT NULL
);

CREATE TABLE grants (
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    state text NOT NULL,
    origin text,
    record jsonb NOT NULL
);
CREATE INDEX grants_by_user ON grants (user_id, id);

-- Who owned every grant ever stored: kept when the grant is removed (usage outlives it).
CREATE TABLE grant_owners (
    user_id text COLLATE "C" NOT NULL,
    grant_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, grant_id)
);

-- A WebAuthn credential id belongs to one passkey of one person, ever: UNIQUE decides
-- which of two racing registrations wins.
CREATE TABLE passkeys (
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    credential_id text COLLATE "C" NOT NULL UNIQUE,
    record jsonb NOT NULL
);
CREATE INDEX passkeys_by_user ON passkeys (user_id);

-- Sessions under the SHA-256 (hex) of their cookie value.
CREATE TABLE sessions (
    hash text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    created_at bigint NOT NULL,
    last_seen_at bigint NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- WebAuthn ceremony state; `person` marks a signed-in person's ceremony (its id holds
-- the person's id), the others count against the anonymous cap.
CREATE TABLE ceremonies (
    id text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C",
    person boolean NOT NULL,
    expires_at bigint NOT NULL,
    record jsonb NOT NULL
);
-- Deleting a person removes their ceremonies and codes; sweeps remove expired ones.
CREATE INDEX ceremonies_by_user ON ceremonies (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX ceremonies_by_expiry ON ceremonies (expires_at);

-- Connect codes under the SHA-256 (hex) of the code.
CREATE TABLE connect_codes (
    hash text COLLATE "C" PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL,
    record jsonb NOT NULL
);
CREATE INDEX connect_codes_by_user ON connect_codes (user_id);
CREATE INDEX connect_codes_by_expiry ON connect_codes (expires_at);

-- Usage counters per grant, UTC day and model, added to in place
-- (`INSERT ... ON CONFLICT ... DO UPDATE SET col = col + excluded.col`).
CREATE TABLE usage (
    grant_id text COLLATE "C" NOT NULL,
    day bigint NOT NULL,
    model text COLLATE "C" NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    cached_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    usd_nanos bigint NOT NULL DEFAULT 0,
    estimated bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (grant_id, day, model)
);
CREATE INDEX usage_by_day ON usage (day);

-- Every usage batch written, by the id its node gave it, in the batch's own
-- transaction: a node that lost the answer to its COMMIT asks here whether the batch
-- landed, instead of writing it again (counted twice) or dropping it. Kept a day.
CREATE TABLE usage_batches (
    id text COLLATE "C" PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX usage_batches_by_time ON usage_batches (written_at);

-- Admin keys: SHA-256 of the secret only.
CREATE TABLE admin_keys (
    id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

-- The audit log; `user_id` is the person an entry concerns (sled keeps a copy per
-- person; here it is an index).
CREATE TABLE audit (
    at_ns bigint NOT NULL,
    seq bigint NOT NULL,
    user_id text COLLATE "C",
    action text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (at_ns, seq)
);
CREATE INDEX audit_by_user ON audit (user_id, at_ns, seq) WHERE user_id IS NOT NULL;
