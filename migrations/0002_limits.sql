-- Issue 14 (limits exact across nodes): the limiter's per-grant windows, shared by
-- every node, and the two functions each request with a limit calls — one statement
-- to acquire, one to settle. The math is keygate-core's `policy` (Bucket,
-- decide_rules, UsageWindow::{conform, apply, settle}) and the server limiter's
-- period roll-over (`load_period`), statement for statement; the test
-- crates/keygate-store/tests/pg_limits.rs drives both with the same random steps and
-- compares every answer and the state.
--
-- Reads the `usage` table (migration 0001) only when a budget window is first seen
-- in a period: columns grant_id, day, model, usd_nanos, prompt_tokens,
-- completion_tokens. PL/pgSQL resolves it at call time, not here.
--
-- Every lease an acquire takes is a row of `limit_leases`, owned by the node that took
-- it; a settle ends it by id (once: settling it again does nothing). Nodes mark
-- themselves alive in `limit_nodes` every few seconds (`keygate_limits_alive`), then
-- reclaim the leases of nodes that have stopped doing so (`keygate_limits_reclaim`) — a
-- node killed with requests in flight gives their places and reservations back within
-- its time to live, not never.
--
-- Lock order, everywhere: a grant's row in `grants` (when a writer takes it) before
-- its windows; its grant-wide window ('') before anything else of its limits — its
-- lease rows and model windows are only ever locked under it; grants in id order.
-- Whatever locks several windows takes them in that order first
-- (`keygate_limits_lock_grants`).

CREATE TABLE IF NOT EXISTS limit_windows (
    grant_id        text    NOT NULL,
    -- '' for the grant-wide limits, else the model name of an override.
    scope           text    NOT NULL,
    -- Token buckets as policy::Bucket: levels in tokens × 60 000 (debt allowed, so
    -- possibly negative), times in milliseconds. NULL limit: no bucket.
    rpm_limit       bigint,
    rpm_level       numeric,
    rpm_at          bigint,
    tpm_limit       bigint,
    tpm_level       numeric,
    tpm_at          bigint,
    in_flight       bigint  NOT NULL DEFAULT 0,
    reserved_usd    numeric NOT NULL DEFAULT 0,
    reserved_tokens numeric NOT NULL DEFAULT 0,
    settled_usd     numeric NOT NULL DEFAULT 0,
    settled_tokens  numeric NOT NULL DEFAULT 0,
    -- The budget period `settled_*` belongs to (NULL: never read / no budget) and
    -- when it ends (unix seconds).
    period_kind     text,
    period_start    bigint,
    resets_at       bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (grant_id, scope)
);

-- Leases in flight: what each holds in its grant's window and (when `model` is not
-- NULL) in that model's window — `keygate_limits_apply`'s figures, given back by a
-- settle or a reclaim.
CREATE TABLE IF NOT EXISTS limit_leases (
    -- Chosen by the node (random), so that it knows the id of a lease whose acquire's
    -- answer it lost, and can end it.
    id              bigint      PRIMARY KEY,
    node_id         text        NOT NULL,
    grant_id        text        NOT NULL,
    model           text,
    g_lease_tokens  bigint      NOT NULL DEFAULT 0,
    g_res_usd       bigint      NOT NULL DEFAULT 0,
    g_res_tokens    bigint      NOT NULL DEFAULT 0,
    m_lease_tokens  bigint      NOT NULL DEFAULT 0,
    m_res_usd       bigint      NOT NULL DEFAULT 0,
    m_res_tokens    bigint      NOT NULL DEFAULT 0,
    -- The database's clock, as `limit_nodes`: the nodes' clocks never decide liveness.
    taken_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Reclaimed from a node taken for dead: its place and reservation are given back
    -- and charged_* counted as spent; the row stays (an hour) so that a late settle
    -- from a node that was only slow adds what its answer cost beyond that.
    reclaimed_at    timestamptz,
    charged_usd     bigint      NOT NULL DEFAULT 0,
    charged_tokens  bigint      NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS limit_leases_grant ON limit_leases (grant_id);
CREATE INDEX IF NOT EXISTS limit_leases_node ON limit_leases (node_id);

-- The nodes that take leases, and until when each is known to be alive (its last
-- heartbeat plus its time to live).
CREATE TABLE IF NOT EXISTS limit_nodes (
    node_id     text        PRIMARY KEY,
    alive_until timestamptz NOT NULL
);

-- --- policy::Bucket ----------------------------------------------------------------

CREATE OR REPLACE FUNCTION keygate_bucket_level_at(lvl numeric, at_ms bigint, lim bigint, now_ms bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT least(lvl + greatest(now_ms - at_ms, 0)::numeric * lim, lim::numeric * 60000)
$$;

-- Milliseconds until n tokens are available; NULL: never (more than the capacity).
CREATE OR REPLACE FUNCTION keygate_bucket_wait_ms(lvl numeric, at_ms bigint, lim bigint, n bigint, now_ms bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN n > lim THEN NULL
        WHEN n::numeric * 60000 - keygate_bucket_level_at(lvl, at_ms, lim, now_ms) <= 0 THEN 0
        ELSE div(n::numeric * 60000 - keygate_bucket_level_at(lvl, at_ms, lim, now_ms)
                 + greatest(lim, 1) - 1, greatest(lim, 1))
    END
$$;

CREATE OR REPLACE FUNCTION keygate_bucket_available(lvl numeric, at_ms bigint, lim bigint, now_ms bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(div(keygate_bucket_level_at(lvl, at_ms, lim, now_ms), 60000), 0)
$$;

CREATE OR REPLACE FUNCTION keygate_bucket_reset_ms(lvl numeric, at_ms bigint, lim bigint, now_ms bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(div(lim::numeric * 60000 - keygate_bucket_level_at(lvl, at_ms, lim, now_ms)
                        + greatest(lim, 1) - 1, greatest(lim, 1)), 0)
$$;

-- --- the windows -------------------------------------------------------------------

-- UsageWindow::conform for one bucket: created full, resized (Bucket::set_limit: keep
-- what was used, within the new cap), or dropped.
CREATE OR REPLACE FUNCTION keygate_bucket_conform(
    INOUT lim bigint, INOUT lvl numeric, INOUT at_ms bigint, new_lim bigint, now_ms bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    used numeric;
BEGIN
    IF new_lim IS NULL THEN
        lim := NULL; lvl := NULL; at_ms := NULL;
    ELSIF lim IS NULL THEN
        lim := new_lim; lvl := new_lim::numeric * 60000; at_ms := now_ms;
    ELSIF lim <> new_lim THEN
        lvl := keygate_bucket_level_at(lvl, at_ms, lim, now_ms);
        at_ms := greatest(at_ms, now_ms);
        used := lim::numeric * 60000 - lvl;
        lim := new_lim;
        lvl := least(new_lim::numeric * 60000 - used, new_lim::numeric * 60000);
    END IF;
END
$$;

-- The limiter's load_period: when the budget's period changed (or was never read),
-- settled := the period's usage rows (of the override's model, for a model window).
-- Without a budget, nothing is settled and no period is kept.
CREATE OR REPLACE FUNCTION keygate_limits_load_period(
    INOUT w limit_windows, p_row_model text, p_kind text, p_start bigint, p_end bigint,
    p_first_day integer, p_last_day integer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_usd numeric;
    v_tokens numeric;
BEGIN
    IF p_kind IS NULL THEN
        w.period_kind := NULL; w.period_start := NULL;
        w.settled_usd := 0; w.settled_tokens := 0;
        RETURN;
    END IF;
    IF w.period_kind IS NOT DISTINCT FROM p_kind AND w.period_start IS NOT DISTINCT FROM p_start THEN
        RETURN;
    END IF;
    SELECT coalesce(sum(u.usd_nanos), 0),
           coalesce(sum(u.prompt_tokens), 0) + coalesce(sum(u.completion_tokens), 0)
      INTO v_usd, v_tokens
      FROM usage u
     WHERE u.grant_id = w.grant_id AND u.day BETWEEN p_first_day AND p_last_day
       AND (p_row_model IS NULL OR u.model = p_row_model);
    -- Forgotten (the grant's limits were edited) within the same period: the window
    -- already counts answers the nodes have not flushed to `usage` yet (up to a second
    -- each), so it keeps the larger of the two — an edit must never un-spend a budget.
    IF w.period_kind IS NULL AND w.period_start IS NOT DISTINCT FROM p_start THEN
        w.settled_usd := greatest(w.settled_usd, v_usd);
        w.settled_tokens := greatest(w.settled_tokens, v_tokens);
    ELSE
        w.settled_usd := v_usd;
        w.settled_tokens := v_tokens;
    END IF;
    w.resets_at := p_end;
    w.period_kind := p_kind;
    w.period_start := p_start;
END
$$;

-- policy::decide_rules on a window. Returns NULL deny when accepted (with the lease in
-- l_*), else the refusal: deny in ('model_not_priced', 'budget_usd', 'budget_tokens',
-- 'tokens_never_fit', 'concurrency', 'requests', 'tokens'), its limit, retry-after ms,
-- the tokens requested, the period end.
CREATE OR REPLACE FUNCTION keygate_limits_decide(
    w limit_windows, r_rpm bigint, r_tpm bigint, r_conc bigint, r_usd bigint, r_tokens bigint,
    est_tokens bigint, est_usd bigint, now_ms bigint,
    OUT deny text, OUT deny_limit bigint, OUT retry_after_ms bigint,
    OUT l_request boolean, OUT l_tokens bigint, OUT l_usd bigint, OUT l_res_tokens bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    wait numeric;
BEGIN
    l_request := r_rpm IS NOT NULL; l_tokens := 0; l_usd := 0; l_res_tokens := 0;
    IF r_usd IS NOT NULL THEN
        IF est_usd IS NULL THEN
            deny := 'model_not_priced'; RETURN;
        END IF;
        IF w.settled_usd + w.reserved_usd >= r_usd
           OR w.settled_usd + w.reserved_usd + est_usd > r_usd THEN
            deny := 'budget_usd'; deny_limit := r_usd; RETURN;
        END IF;
        l_usd := est_usd;
    END IF;
    IF r_tokens IS NOT NULL THEN
        IF w.settled_tokens + w.reserved_tokens >= r_tokens
           OR w.settled_tokens + w.reserved_tokens + est_tokens > r_tokens THEN
            deny := 'budget_tokens'; deny_limit := r_tokens; RETURN;
        END IF;
        l_res_tokens := est_tokens;
    END IF;
    IF r_tpm IS NOT NULL AND est_tokens > r_tpm THEN
        deny := 'tokens_never_fit'; deny_limit := r_tpm; RETURN;
    END IF;
    IF r_conc IS NOT NULL AND w.in_flight >= r_conc THEN
        deny := 'concurrency'; deny_limit := r_conc; RETURN;
    END IF;
    IF r_rpm IS NOT NULL AND w.rpm_limit IS NOT NULL THEN
        wait := coalesce(keygate_bucket_wait_ms(w.rpm_level, w.rpm_at, w.rpm_limit, 1, now_ms), 60000);
        IF wait > 0 THEN
            deny := 'requests'; deny_limit := r_rpm; retry_after_ms := wait; RETURN;
        END IF;
    END IF;
    IF r_tpm IS NOT NULL AND w.tpm_limit IS NOT NULL THEN
        wait := keygate_bucket_wait_ms(w.tpm_level, w.tpm_at, w.tpm_limit, est_tokens, now_ms);
        IF wait IS NULL THEN
            deny := 'tokens_never_fit'; deny_limit := r_tpm; RETURN;
        ELSIF wait > 0 THEN
            deny := 'tokens'; deny_limit := r_tpm; retry_after_ms := wait; RETURN;
        END IF;
        l_tokens := est_tokens;
    END IF;
END
$$;

-- UsageWindow::apply.
CREATE OR REPLACE FUNCTION keygate_limits_apply(
    INOUT w limit_windows, l_request boolean, l_tokens bigint, l_usd bigint, l_res_tokens bigint,
    now_ms bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF l_request AND w.rpm_limit IS NOT NULL THEN
        w.rpm_level := keygate_bucket_level_at(w.rpm_level, w.rpm_at, w.rpm_limit, now_ms) - 60000;
        w.rpm_at := greatest(w.rpm_at, now_ms);
    END IF;
    IF l_tokens > 0 AND w.tpm_limit IS NOT NULL THEN
        w.tpm_level := keygate_bucket_level_at(w.tpm_level, w.tpm_at, w.tpm_limit, now_ms)
                       - l_tokens::numeric * 60000;
        w.tpm_at := greatest(w.tpm_at, now_ms);
    END IF;
    w.in_flight := w.in_flight + 1;
    w.reserved_usd := w.reserved_usd + l_usd;
    w.reserved_tokens := w.reserved_tokens + l_res_tokens;
END
$$;

-- UsageWindow::settle.
CREATE OR REPLACE FUNCTION keygate_limits_settle_window(
    INOUT w limit_windows, l_tokens bigint, l_usd bigint, l_res_tokens bigint,
    a_usd bigint, a_tokens bigint, now_ms bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    w.in_flight := greatest(w.in_flight - 1, 0);
    w.reserved_usd := greatest(w.reserved_usd - l_usd, 0);
    w.reserved_tokens := greatest(w.reserved_tokens - l_res_tokens, 0);
    w.settled_usd := w.settled_usd + a_usd;
    w.settled_tokens := w.settled_tokens + a_tokens;
    IF w.tpm_limit IS NOT NULL THEN
        w.tpm_level := keygate_bucket_level_at(w.tpm_level, w.tpm_at, w.tpm_limit, now_ms);
        w.tpm_at := greatest(w.tpm_at, now_ms);
        IF a_tokens < l_tokens THEN
            w.tpm_level := least(w.tpm_level + (l_tokens - a_tokens)::numeric * 60000,
                                 w.tpm_limit::numeric * 60000);
        ELSE
            w.tpm_level := w.tpm_level - (a_tokens - l_tokens)::numeric * 60000;
        END IF;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION keygate_limits_store(w limit_windows)
RETURNS void LANGUAGE sql AS $$
    UPDATE limit_windows SET
        rpm_limit = w.rpm_limit, rpm_level = w.rpm_level, rpm_at = w.rpm_at,
        tpm_limit = w.tpm_limit, tpm_level = w.tpm_level, tpm_at = w.tpm_at,
        in_flight = w.in_flight, reserved_usd = w.reserved_usd,
        reserved_tokens = w.reserved_tokens, settled_usd = w.settled_usd,
        settled_tokens = w.settled_tokens, period_kind = w.period_kind,
        period_start = w.period_start, resets_at = w.resets_at
    WHERE grant_id = w.grant_id AND scope = w.scope
$$;

-- The window (grant_id, scope), created empty if new, locked FOR UPDATE. Every caller
-- locks the grant-wide row ('') first, so two calls for one grant serialise on it and
-- never deadlock on the model row.
CREATE OR REPLACE FUNCTION keygate_limits_lock(p_grant text, p_scope text)
RETURNS limit_windows LANGUAGE plpgsql AS $$
DECLARE
    w limit_windows;
BEGIN
    SELECT * INTO w FROM limit_windows WHERE grant_id = p_grant AND scope = p_scope FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO limit_windows (grant_id, scope) VALUES (p_grant, p_scope)
            ON CONFLICT DO NOTHING;
        SELECT * INTO w FROM limit_windows WHERE grant_id = p_grant AND scope = p_scope FOR UPDATE;
    END IF;
    RETURN w;
END
$$;

-- Brings a window up to date for a request (Limiter::prepare): buckets conformed to
-- the rules, the budget's period loaded.
CREATE OR REPLACE FUNCTION keygate_limits_prepare(
    INOUT w limit_windows, r_rpm bigint, r_tpm bigint, p_row_model text,
    p_kind text, p_start bigint, p_end bigint, p_first_day integer, p_last_day integer,
    now_ms bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT c.lim, c.lvl, c.at_ms INTO w.rpm_limit, w.rpm_level, w.rpm_at
      FROM keygate_bucket_conform(w.rpm_limit, w.rpm_level, w.rpm_at, r_rpm, now_ms) c;
    SELECT c.lim, c.lvl, c.at_ms INTO w.tpm_limit, w.tpm_level, w.tpm_at
      FROM keygate_bucket_conform(w.tpm_limit, w.tpm_level, w.tpm_at, r_tpm, now_ms) c;
    w := keygate_limits_load_period(w, p_row_model, p_kind, p_start, p_end, p_first_day, p_last_day);
END
$$;

-- One request's acquire (Limiter::acquire): the grant-wide window, then — when the
-- request's model has overrides — the model's, both taken or neither. `p_model` is
-- the request's model (NULL: none; never ''), `p_row_model` its usage rows' name;
-- `m_has` whether it has overrides (then m_* are its rules and budget period). A
-- refusal still keeps the windows brought up to date (buckets conformed, period
-- loaded), as the in-memory limiter does. Answers the refusal (deny NULL: accepted),
-- the leases, and the grant-wide rpm/tpm state after it (limit, remaining, ms to full).
CREATE OR REPLACE FUNCTION keygate_limits_acquire(
    p_node text, p_lease bigint, p_grant text, p_now_ms bigint, est_tokens bigint, est_usd bigint,
    g_rpm bigint, g_tpm bigint, g_conc bigint, g_usd bigint, g_tokens bigint,
    g_kind text, g_start bigint, g_end bigint, g_first_day integer, g_last_day integer,
    p_model text, p_row_model text, m_has boolean,
    m_rpm bigint, m_tpm bigint, m_usd bigint, m_tokens bigint,
    m_kind text, m_start bigint, m_end bigint, m_first_day integer, m_last_day integer,
    OUT deny text, OUT deny_model boolean, OUT deny_limit bigint, OUT retry_after_ms bigint,
    OUT resets_at bigint,
    OUT g_request boolean, OUT g_lease_tokens bigint, OUT g_res_usd bigint, OUT g_res_tokens bigint,
    OUT m_request boolean, OUT m_lease_tokens bigint, OUT m_res_usd bigint, OUT m_res_tokens bigint,
    OUT rpm_limit bigint, OUT rpm_remaining bigint, OUT rpm_reset_ms bigint,
    OUT tpm_limit bigint, OUT tpm_remaining bigint, OUT tpm_reset_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    g limit_windows;
    m limit_windows;
    gd record;
    md record;
BEGIN
    deny_model := false;
    g := keygate_limits_lock(p_grant, '');
    g := keygate_limits_prepare(g, g_rpm, g_tpm, NULL, g_kind, g_start, g_end,
                                g_first_day, g_last_day, p_now_ms);
    SELECT * INTO gd FROM keygate_limits_decide(g, g_rpm, g_tpm, g_conc, g_usd, g_tokens,
                                                est_tokens, est_usd, p_now_ms);
    IF gd.deny IS NOT NULL THEN
        deny := gd.deny; deny_limit := gd.deny_limit; retry_after_ms := gd.retry_after_ms;
        resets_at := g.resets_at;
    ELSIF m_has AND p_model IS NOT NULL AND p_model <> '' THEN
        m := keygate_limits_lock(p_grant, p_model);
        m := keygate_limits_prepare(m, m_rpm, m_tpm, p_row_model, m_kind, m_start, m_end,
                                    m_first_day, m_last_day, p_now_ms);
        SELECT * INTO md FROM keygate_limits_decide(m, m_rpm, m_tpm, NULL, m_usd, m_tokens,
                                                    est_tokens, est_usd, p_now_ms);
        IF md.deny IS NOT NULL THEN
            deny := md.deny; deny_model := true; deny_limit := md.deny_limit;
            retry_after_ms := md.retry_after_ms; resets_at := m.resets_at;
        ELSE
            m := keygate_limits_apply(m, md.l_request, md.l_tokens, md.l_usd, md.l_res_tokens, p_now_ms);
            m_request := md.l_request; m_lease_tokens := md.l_tokens;
            m_res_usd := md.l_usd; m_res_tokens := md.l_res_tokens;
        END IF;
        PERFORM keygate_limits_store(m);
    ELSIF p_model IS NOT NULL AND p_model <> '' THEN
        -- Overrides removed since the last request: forget their window unless leases
        -- are still out in it (their settlement comes back to it, and should the
        -- overrides return it must still know those reservations); its spend is
        -- reloaded then, as requests in between were not counted in it.
        DELETE FROM limit_windows
         WHERE grant_id = p_grant AND scope = p_model AND in_flight = 0;
        UPDATE limit_windows SET period_kind = NULL, period_start = NULL
         WHERE grant_id = p_grant AND scope = p_model;
    END IF;
    IF deny IS NULL THEN
        g := keygate_limits_apply(g, gd.l_request, gd.l_tokens, gd.l_usd, gd.l_res_tokens, p_now_ms);
        g_request := gd.l_request; g_lease_tokens := gd.l_tokens;
        g_res_usd := gd.l_usd; g_res_tokens := gd.l_res_tokens;
        INSERT INTO limit_leases (id, node_id, grant_id, model, g_lease_tokens, g_res_usd,
                                  g_res_tokens, m_lease_tokens, m_res_usd, m_res_tokens)
        VALUES (p_lease, p_node, p_grant, CASE WHEN m_request IS NOT NULL THEN p_model END,
                g_lease_tokens, g_res_usd, g_res_tokens, coalesce(m_lease_tokens, 0),
                coalesce(m_res_usd, 0), coalesce(m_res_tokens, 0));
    END IF;
    PERFORM keygate_limits_store(g);
    IF g.rpm_limit IS NOT NULL THEN
        rpm_limit := g.rpm_limit;
        rpm_remaining := keygate_bucket_available(g.rpm_level, g.rpm_at, g.rpm_limit, p_now_ms);
        rpm_reset_ms := keygate_bucket_reset_ms(g.rpm_level, g.rpm_at, g.rpm_limit, p_now_ms);
    END IF;
    IF g.tpm_limit IS NOT NULL THEN
        tpm_limit := g.tpm_limit;
        tpm_remaining := keygate_bucket_available(g.tpm_level, g.tpm_at, g.tpm_limit, p_now_ms);
        tpm_reset_ms := keygate_bucket_reset_ms(g.tpm_level, g.tpm_at, g.tpm_limit, p_now_ms);
    END IF;
END
$$;

-- One lease's settlement (Limiter::settle): each window it holds rolls to the current
-- budget period (when it has a budget), then releases the lease's place and
-- reservations, adds the actual spend, and gives back (or charges) tpm tokens. The
-- lease row says what it holds. True: the lease was held and is ended. False: it had
-- ended already — settled before (nothing changes), or reclaimed from a node taken for
-- dead (then only what the answer cost beyond what the reclaim charged is added).
CREATE OR REPLACE FUNCTION keygate_limits_settle(
    p_lease bigint, p_grant text, p_now_ms bigint, a_usd bigint, a_tokens bigint,
    g_kind text, g_start bigint, g_end bigint, g_first_day integer, g_last_day integer,
    p_row_model text,
    m_kind text, m_start bigint, m_end bigint, m_first_day integer, m_last_day integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    g limit_windows;
    g_found boolean;
    l limit_leases;
BEGIN
    -- The grant's window first (the lock order above), so a settle and a reclaim of
    -- one lease never deadlock.
    SELECT * INTO g FROM limit_windows WHERE grant_id = p_grant AND scope = '' FOR UPDATE;
    g_found := FOUND;
    DELETE FROM limit_leases WHERE id = p_lease AND grant_id = p_grant RETURNING * INTO l;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF l.reclaimed_at IS NOT NULL THEN
        -- Its place and reservation were given back when it was reclaimed.
        a_usd := greatest(a_usd - l.charged_usd, 0);
        a_tokens := greatest(a_tokens - l.charged_tokens, 0);
        IF g_found THEN
            g.settled_usd := g.settled_usd + a_usd;
            g.settled_tokens := g.settled_tokens + a_tokens;
            PERFORM keygate_limits_store(g);
        END IF;
        IF l.model IS NOT NULL THEN
            UPDATE limit_windows SET settled_usd = settled_usd + a_usd,
                                     settled_tokens = settled_tokens + a_tokens
             WHERE grant_id = l.grant_id AND scope = l.model;
        END IF;
        RETURN false;
    END IF;
    IF g_found THEN
        IF g_kind IS NOT NULL THEN
            g := keygate_limits_load_period(g, NULL, g_kind, g_start, g_end, g_first_day, g_last_day);
        END IF;
        g := keygate_limits_settle_window(g, l.g_lease_tokens, l.g_res_usd, l.g_res_tokens,
                                          a_usd, a_tokens, p_now_ms);
        PERFORM keygate_limits_store(g);
    END IF;
    PERFORM keygate_limits_settle_model(l, a_usd, a_tokens, p_now_ms, p_row_model,
                                        m_kind, m_start, m_end, m_first_day, m_last_day);
    RETURN true;
END
$$;

-- The model half of a settle or a reclaim: nothing when the lease holds no model
-- window. A NULL m_kind: no period roll-over; a NULL p_now_ms: the window's own tpm
-- time (a reclaim, which must not move a bucket by the database's clock).
CREATE OR REPLACE FUNCTION keygate_limits_settle_model(
    l limit_leases, a_usd bigint, a_tokens bigint, p_now_ms bigint, p_row_model text,
    m_kind text, m_start bigint, m_end bigint, m_first_day integer, m_last_day integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m limit_windows;
BEGIN
    IF l.model IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO m FROM limit_windows WHERE grant_id = l.grant_id AND scope = l.model FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF m_kind IS NOT NULL THEN
        m := keygate_limits_load_period(m, p_row_model, m_kind, m_start, m_end,
                                        m_first_day, m_last_day);
    END IF;
    m := keygate_limits_settle_window(m, l.m_lease_tokens, l.m_res_usd, l.m_res_tokens,
                                      a_usd, a_tokens, coalesce(p_now_ms, m.tpm_at, 0));
    PERFORM keygate_limits_store(m);
END
$$;

-- Locks every window of the given grants, in the lock order (grant id, then scope:
-- '' first). For whatever changes several windows outside an acquire or a settle.
-- (PL/pgSQL: an SQL function's last SELECT would stop at its first row.)
CREATE OR REPLACE FUNCTION keygate_limits_lock_grants(p_grants text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM limit_windows WHERE grant_id = ANY (p_grants)
      ORDER BY grant_id, scope FOR UPDATE;
END
$$;

-- A node's heartbeat: it is alive for `p_ttl_ms` more, by the database's clock. Its own
-- statement, committed at once, so that nothing the reclaim waits for can delay it.
CREATE OR REPLACE FUNCTION keygate_limits_alive(p_node text, p_ttl_ms bigint)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO limit_nodes (node_id, alive_until)
    VALUES (p_node, clock_timestamp() + p_ttl_ms * interval '1 millisecond')
    ON CONFLICT (node_id) DO UPDATE SET alive_until = excluded.alive_until
$$;

-- Reclaims the leases of nodes that are not alive — no heartbeat for their time to
-- live, or never one, for a lease older than `p_ttl_ms`: each is settled as if its
-- answer had spent all it reserved (its upstream may have answered in full; nobody
-- counted it), which frees its place and keeps a budget on the safe side; the row is
-- kept, marked, for a late settle (see keygate_limits_settle). A window some request
-- holds right now is skipped (a later call takes it) — unless the lease is overdue by
-- three times the TTL: then it is waited for, up to the lock timeout, so a grant busy
-- all the time is not skipped forever. At most 1000 a call, grant by grant in the lock
-- order. How many.
CREATE OR REPLACE FUNCTION keygate_limits_reclaim(p_ttl_ms bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    ttl interval := p_ttl_ms * interval '1 millisecond';
    x record;
    g limit_windows;
    l limit_leases;
    spent_usd bigint;
    spent_tokens bigint;
    reclaimed bigint := 0;
BEGIN
    -- What it still waits for (a lease row, a model window, an overdue grant's
    -- window): not for long, each.
    PERFORM set_config('lock_timeout', '2s', true);
    FOR x IN
        SELECT ll.id, ll.grant_id, ll.taken_at FROM limit_leases ll
         WHERE ll.reclaimed_at IS NULL
           AND ll.taken_at < clock_timestamp() - ttl
           AND NOT EXISTS (SELECT 1 FROM limit_nodes n
                            WHERE n.node_id = ll.node_id AND n.alive_until >= clock_timestamp())
         ORDER BY ll.grant_id, ll.id
         LIMIT 1000
    LOOP
        IF x.taken_at < clock_timestamp() - 3 * ttl THEN
            BEGIN
                SELECT * INTO STRICT g FROM limit_windows
                 WHERE grant_id = x.grant_id AND scope = '' FOR UPDATE;
            EXCEPTION
                -- Still busy after the lock timeout; or gone with its grant.
                WHEN lock_not_available OR no_data_found THEN
                    CONTINUE;
            END;
        ELSE
            SELECT * INTO g FROM limit_windows
             WHERE grant_id = x.grant_id AND scope = '' FOR UPDATE SKIP LOCKED;
            -- Busy (skipped), or gone with its grant (then so is the lease, or soon).
            CONTINUE WHEN NOT FOUND;
        END IF;
        -- Settled meanwhile: its node was slow, not dead.
        SELECT * INTO l FROM limit_leases WHERE id = x.id AND reclaimed_at IS NULL FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        -- One request's reservation is the same estimate in each window that has a
        -- budget (0 in one without): the larger is what it reserved.
        spent_usd := greatest(l.g_res_usd, l.m_res_usd);
        spent_tokens := greatest(l.g_lease_tokens, l.g_res_tokens, l.m_lease_tokens, l.m_res_tokens);
        g := keygate_limits_settle_window(g, l.g_lease_tokens, l.g_res_usd, l.g_res_tokens,
                                          spent_usd, spent_tokens, coalesce(g.tpm_at, 0));
        PERFORM keygate_limits_store(g);
        PERFORM keygate_limits_settle_model(l, spent_usd, spent_tokens, NULL, NULL,
                                            NULL, NULL, NULL, NULL, NULL);
        UPDATE limit_leases SET reclaimed_at = clock_timestamp(), charged_usd = spent_usd,
                                charged_tokens = spent_tokens
         WHERE id = l.id;
        reclaimed := reclaimed + 1;
    END LOOP;
    -- Reclaimed an hour ago: no settle is coming any more.
    DELETE FROM limit_leases WHERE reclaimed_at < clock_timestamp() - interval '1 hour';
    -- Nodes gone for an hour with nothing left: forgotten.
    DELETE FROM limit_nodes n
     WHERE n.alive_until < clock_timestamp() - interval '1 hour'
       AND NOT EXISTS (SELECT 1 FROM limit_leases ll WHERE ll.node_id = n.node_id);
    RETURN reclaimed;
END
$$;

-- A grant's limits were edited: every window of it reloads its budget's spend from the
-- usage rows at its next request. Requests made while the grant (or a model) had no
-- limit made no statement and are not in its window; the in-memory limiter saw them,
-- this reload does (up to the usage counters' batching, ≤ 1 s). One statement per
-- edit, none per request.
CREATE OR REPLACE FUNCTION keygate_limits_forget(p_grant text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_limits_lock_grants(ARRAY[p_grant]);
    -- The period's start stays: a reload in the same period keeps what the window
    -- counted (see keygate_limits_load_period).
    UPDATE limit_windows SET period_kind = NULL WHERE grant_id = p_grant;
END
$$;
