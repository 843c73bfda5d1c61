//! The SQLite schema, one migration per version. A store file records its
//! version in `PRAGMA user_version`; opening it applies the missing
//! migrations in one transaction. Never edit a released migration: add one.

/// Migrations in order; migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: sessions, statement events, plugin loads, session-id blocks.
    r#"
    CREATE TABLE sessions (
        id                INTEGER PRIMARY KEY,
        started_at        INTEGER NOT NULL,
        subject           TEXT NOT NULL,
        user_name         TEXT NOT NULL,
        groups_json       TEXT NOT NULL,
        issuer            TEXT NOT NULL,
        actor_chain_json  TEXT NOT NULL,
        target            TEXT NOT NULL,
        client_addr       TEXT NOT NULL,
        application_name  TEXT,
        ended_at          INTEGER,
        end_reason        TEXT,
        bytes_from_client INTEGER NOT NULL DEFAULT 0,
        bytes_to_client   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX sessions_started ON sessions (started_at);
    CREATE INDEX sessions_user ON sessions (user_name, started_at);

    CREATE TABLE events (
        session_id          INTEGER NOT NULL,
        seq                 INTEGER NOT NULL,
        at                  INTEGER NOT NULL,
        protocol            TEXT NOT NULL,
        sql                 TEXT NOT NULL,
        fingerprint         TEXT NOT NULL,
        kinds_json          TEXT NOT NULL,
        tables_read_json    TEXT NOT NULL,
        tables_written_json TEXT NOT NULL,
        verdict             TEXT NOT NULL,
        decided_by          TEXT,
        rule                TEXT,
        reason              TEXT,
        status              TEXT NOT NULL,
        duration_us         INTEGER,
        rows                INTEGER,
        sqlstate            TEXT,
        error               TEXT,
        sample_json         TEXT,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_at ON events (at);

    CREATE TABLE plugin_loads (
        at      INTEGER NOT NULL,
        name    TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256  TEXT NOT NULL
    );

    CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO counters (name, value) VALUES ('next_session_id', 1);
    "#,
    // 2: approval requests (votes as JSON), and the approval behind an event.
    r#"
    CREATE TABLE approvals (
        id               TEXT PRIMARY KEY,
        created_at       INTEGER NOT NULL,
        expires_at       INTEGER NOT NULL,
        session_id       INTEGER NOT NULL,
        subject          TEXT NOT NULL,
        user_name        TEXT NOT NULL,
        groups_json      TEXT NOT NULL,
        issuer           TEXT NOT NULL,
        actor_chain_json TEXT NOT NULL,
        target           TEXT NOT NULL,
        sql              TEXT NOT NULL,
        fingerprint      TEXT NOT NULL,
        plugin           TEXT,
        rule             TEXT,
        reason           TEXT NOT NULL,
        mode             TEXT NOT NULL,
        min_approvals    INTEGER NOT NULL,
        status           TEXT NOT NULL,
        decided_at       INTEGER,
        votes_json       TEXT NOT NULL,
        grant_uses_left  INTEGER NOT NULL,
        grant_minutes    INTEGER NOT NULL,
        grant_until      INTEGER
    );
    CREATE INDEX approvals_status ON approvals (status, created_at);
    CREATE INDEX approvals_grant ON approvals (target, fingerprint, subject);
    ALTER TABLE events ADD COLUMN approval_id TEXT;
    "#,
    // 3: revoked delegated tokens.
    r#"
    CREATE TABLE revocations (
        jti        TEXT PRIMARY KEY,
        revoked_at INTEGER NOT NULL,
        revoked_by TEXT NOT NULL
    );
    "#,
    // 4: one person's pending approval requests, found without a scan.
    r#"
    CREATE INDEX approvals_requester ON approvals (subject, issuer, status);
    "#,
    // 5: the protocol of each session and approval request (every record
    // before this version is PostgreSQL's).
    r#"
    ALTER TABLE sessions ADD COLUMN protocol TEXT NOT NULL DEFAULT 'postgres';
    ALTER TABLE approvals ADD COLUMN protocol TEXT NOT NULL DEFAULT 'postgres';
    "#,
    // 6: the neutral action of each event (every event before this version
    // is a PostgreSQL statement).
    r#"
    ALTER TABLE events ADD COLUMN action TEXT NOT NULL DEFAULT 'statement';
    "#,
    // 7: what every run of one statement shape shares (its protocol, text,
    // fingerprint, kinds and tables) stored once; an event with a shape
    // keeps only what is its own. An event row with `shape_id` set leaves
    // protocol, fingerprint and the JSON lists empty, and its `sql` empty
    // when the text is the shape's. Rows from before this version have no
    // shape and keep every column.
    r#"
    CREATE TABLE event_shapes (
        id                  INTEGER PRIMARY KEY,
        protocol            TEXT NOT NULL,
        sql                 TEXT NOT NULL,
        fingerprint         TEXT NOT NULL,
        kinds_json          TEXT NOT NULL,
        tables_read_json    TEXT NOT NULL,
        tables_written_json TEXT NOT NULL,
        UNIQUE (protocol, fingerprint, kinds_json, tables_read_json, tables_written_json)
    );
    ALTER TABLE events ADD COLUMN shape_id INTEGER;
    "#,
    // 8: terminal recordings (asciicast v2) of SSH channels, in chunks: the
    // recording of the command event `(session_id, event_seq)` is its
    // chunks' `data` joined in `idx` order (chunk 0 is the header line).
    r#"
    CREATE TABLE recording_chunks (
        session_id INTEGER NOT NULL,
        event_seq  INTEGER NOT NULL,
        idx        INTEGER NOT NULL,
        data       TEXT NOT NULL,
        PRIMARY KEY (session_id, event_seq, idx)
    );
    "#,
    // 9: SSH user certificates the gateway minted: the identity behind
    // each (groups, issuer, delegation) stays here, under its serial.
    r#"
    CREATE TABLE ssh_certificates (
        serial        INTEGER PRIMARY KEY,
        key_id        TEXT NOT NULL,
        identity_json TEXT NOT NULL,
        issued_at     INTEGER NOT NULL,
        valid_before  INTEGER NOT NULL
    );
    "#,
];
