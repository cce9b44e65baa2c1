-- tsm-server schema (PostgreSQL). Keep in step with ../sqlite/0001_init.sql: same tables,
-- columns and constraints. Identifiers are UUID text, times are Unix milliseconds, booleans
-- are 0/1 integers, JSON is text (sqlx `Any` carries plain types only).

CREATE TABLE service_providers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    callback_url  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    provider_id   TEXT NOT NULL REFERENCES service_providers(id),
    label         TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE INDEX api_tokens_provider ON api_tokens(provider_id);

CREATE TABLE keysets (
    id                TEXT PRIMARY KEY,
    kvn               BIGINT NOT NULL,
    alg               TEXT NOT NULL,
    kind              TEXT NOT NULL,
    enc_key_id        TEXT,
    mac_key_id        TEXT,
    dek_key_id        TEXT,
    master_keyset_id  TEXT REFERENCES keysets(id),
    diversification   TEXT,
    created_at        BIGINT NOT NULL
);

CREATE TABLE se_issuers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    master_keyset_id  TEXT REFERENCES keysets(id),
    diversification   TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);

CREATE TABLE secure_elements (
    id                        TEXT PRIMARY KEY,
    iccid                     TEXT,
    carrier                   TEXT NOT NULL,
    profile                   TEXT NOT NULL,
    issuer_id                 TEXT REFERENCES se_issuers(id),
    isd_aid                   TEXT NOT NULL,
    isd_keyset_id             TEXT REFERENCES keysets(id),
    scp                       BIGINT,
    scp_i                     BIGINT,
    sequence_counter          BIGINT,
    sequence_counter_current  BIGINT NOT NULL DEFAULT 0,
    kdd                       TEXT,
    registry_json             TEXT,
    registry_read_at          BIGINT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
CREATE UNIQUE INDEX secure_elements_iccid ON secure_elements(iccid);

CREATE TABLE security_domains (
    id            TEXT PRIMARY KEY,
    se_id         TEXT NOT NULL REFERENCES secure_elements(id),
    aid           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    provider_id   TEXT REFERENCES service_providers(id),
    keyset_id     TEXT REFERENCES keysets(id),
    memory_quota  BIGINT,
    life_cycle    BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (se_id, aid)
);
CREATE INDEX security_domains_provider ON security_domains(provider_id);

CREATE TABLE load_files (
    id                         TEXT PRIMARY KEY,
    provider_id                TEXT NOT NULL REFERENCES service_providers(id),
    package_aid                TEXT NOT NULL,
    version                    TEXT NOT NULL,
    cap                        BYTEA NOT NULL,
    size                       BIGINT NOT NULL,
    hash_sha1                  TEXT NOT NULL,
    hash_sha256                TEXT NOT NULL,
    hash_sha1_no_descriptor    TEXT NOT NULL,
    hash_sha256_no_descriptor  TEXT NOT NULL,
    applet_aids                TEXT NOT NULL,
    created_at                 BIGINT NOT NULL,
    UNIQUE (provider_id, package_aid, version)
);

CREATE TABLE services (
    id           TEXT PRIMARY KEY,
    provider_id  TEXT NOT NULL REFERENCES service_providers(id),
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (provider_id, name)
);

CREATE TABLE service_versions (
    id            TEXT PRIMARY KEY,
    provider_id   TEXT NOT NULL REFERENCES service_providers(id),
    service_id    TEXT NOT NULL REFERENCES services(id),
    version       TEXT NOT NULL,
    load_file_id  TEXT NOT NULL REFERENCES load_files(id),
    created_at    BIGINT NOT NULL,
    UNIQUE (service_id, version)
);

CREATE TABLE flavors (
    id                  TEXT PRIMARY KEY,
    provider_id         TEXT NOT NULL REFERENCES service_providers(id),
    service_version_id  TEXT NOT NULL REFERENCES service_versions(id),
    name                TEXT NOT NULL,
    carrier             TEXT,
    profile             TEXT,
    memory_quota        BIGINT,
    created_at          BIGINT NOT NULL,
    UNIQUE (service_version_id, name)
);

CREATE TABLE application_configs (
    id               TEXT PRIMARY KEY,
    provider_id      TEXT NOT NULL REFERENCES service_providers(id),
    flavor_id        TEXT NOT NULL REFERENCES flavors(id),
    ordinal          BIGINT NOT NULL,
    module_aid       TEXT NOT NULL,
    instance_aid     TEXT NOT NULL,
    privileges       TEXT NOT NULL,
    install_params   TEXT NOT NULL,
    make_selectable  BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (flavor_id, ordinal)
);

CREATE TABLE personalization_scripts (
    id                     TEXT PRIMARY KEY,
    provider_id            TEXT NOT NULL REFERENCES service_providers(id),
    application_config_id  TEXT NOT NULL REFERENCES application_configs(id),
    ordinal                BIGINT NOT NULL,
    name                   TEXT NOT NULL,
    blocks                 TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    UNIQUE (application_config_id, ordinal)
);

CREATE TABLE service_instances (
    id                  TEXT PRIMARY KEY,
    provider_id         TEXT NOT NULL REFERENCES service_providers(id),
    service_id          TEXT NOT NULL REFERENCES services(id),
    service_version_id  TEXT NOT NULL REFERENCES service_versions(id),
    flavor_id           TEXT NOT NULL REFERENCES flavors(id),
    se_id               TEXT NOT NULL REFERENCES secure_elements(id),
    state               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX service_instances_provider ON service_instances(provider_id);
CREATE INDEX service_instances_se ON service_instances(se_id);

CREATE TABLE seram_sessions (
    id                TEXT PRIMARY KEY,
    se_id             TEXT NOT NULL REFERENCES secure_elements(id),
    process_id        TEXT,
    state             TEXT NOT NULL,
    order_json        TEXT,
    order_seq         BIGINT NOT NULL,
    last_report_hash  TEXT,
    last_activity     BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    version           BIGINT NOT NULL
);
CREATE INDEX seram_sessions_se ON seram_sessions(se_id);

CREATE TABLE processes (
    id                   TEXT PRIMARY KEY,
    provider_id          TEXT NOT NULL REFERENCES service_providers(id),
    service_instance_id  TEXT REFERENCES service_instances(id),
    se_id                TEXT NOT NULL REFERENCES secure_elements(id),
    operation            TEXT NOT NULL,
    state                TEXT NOT NULL,
    steps_done           BIGINT NOT NULL,
    steps_total          BIGINT NOT NULL,
    apdus                BIGINT NOT NULL,
    round_trips          BIGINT NOT NULL,
    error_code           TEXT,
    error_message        TEXT,
    planner_state        TEXT,
    seram_session_id     TEXT,
    version              BIGINT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    started_at           BIGINT,
    finished_at          BIGINT
);
CREATE INDEX processes_provider ON processes(provider_id, created_at);
CREATE INDEX processes_se_state ON processes(se_id, state, created_at);

CREATE TABLE process_steps (
    process_id   TEXT NOT NULL REFERENCES processes(id),
    ordinal      BIGINT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    PRIMARY KEY (process_id, ordinal)
);

CREATE TABLE apdu_log (
    process_id  TEXT NOT NULL REFERENCES processes(id),
    batch       BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    command     BYTEA NOT NULL,
    response    BYTEA,
    sw          BIGINT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (process_id, batch, seq)
);

CREATE TABLE se_leases (
    se_id        TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    acquired_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    provider_id  TEXT,
    action       TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    detail       TEXT
);
CREATE INDEX audit_log_provider ON audit_log(provider_id, id);
CREATE INDEX audit_log_object ON audit_log(object_type, object_id, id);

CREATE TABLE callbacks_outbox (
    id               TEXT PRIMARY KEY,
    provider_id      TEXT NOT NULL REFERENCES service_providers(id),
    process_id       TEXT NOT NULL REFERENCES processes(id),
    url              TEXT NOT NULL,
    payload          TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    delivered_at     BIGINT,
    last_error       TEXT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX callbacks_outbox_due ON callbacks_outbox(delivered_at, next_attempt_at);

-- The software key store: sealed values only (tsm_gp::crypto::seal, AAD = key id and alg).
CREATE TABLE key_material (
    key_id      TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    kcv         TEXT NOT NULL,
    sealed      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
