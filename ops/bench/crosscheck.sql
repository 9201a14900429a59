-- ops/bench/crosscheck.sql — a month's GPU-milliseconds per institution, from the decoded ledger
-- alone, in DuckDB SQL (run by ops/bench/crosscheck.py). Written from docs/SETTLEMENT.md, not
-- from settlement/src: it works on the final state at once, where the engine applies entries one
-- by one, so the two agree only if the rules are stated (and implemented) the same way.
--
-- Input: usage_raw and registry_raw, one row per ledger entry whose payload decodes (every
-- outcome; outcome 1 = ACCEPTED), with the fields of crosscheck.py's USAGE_COLUMNS and
-- REGISTRY_COLUMNS; variables p0, p1: the period [p0, p1) in UTC ms (a KST calendar month).
-- Output: table xcheck(institution_id, used_gpu_ms, credit_gpu_ms, unpriced_gpu_ms, net_gpu_ms,
-- net_gpu_hours).
--
-- Rules applied (docs/SETTLEMENT.md):
--  1. Only ACCEPTED entries count. Rejected entries (conflicting duplicates, overlaps, malformed
--     bytes, ...) and PARKED ones do not; a parked event counts once, at the seq of the ACCEPTED
--     entry that resolves it. Exact duplicates have no entry at all.
--  2. A usage event, and a correction's replacement, is an interval known by (CSP, event id).
--     A correction acts on its target only if the target exists when the correction is
--     recorded: recorded before it, itself created (a correction's replacement exists only if
--     that correction acted) and not yet removed (the first correction after the target is the
--     one that acts; later ones find nothing). An acting correction removes the whole target
--     and, with a replacement, adds the replacement at the correction's seq.
--  3. An interval is priced with the registry recorded before it: its allocation must be known
--     (recorded at a lower seq), else it is "could not be priced" and on no invoice; the part
--     before the institution record, the rate card of (programme, model) and the co-pay policy
--     of the institution's type are all in force is not priced either.
--     Not modelled: an institution whose type changes inside an interval to a type without a
--     co-pay policy (the type taken is that of the institution's first record).
--  3c. A Rerating recorded after the interval, of its programme and model (or every model),
--     prices the part of it inside [from_ms, to_ms) with the registry recorded before the
--     re-rating: that part is priced if it is priced in either view.
--  3b. An AllocationAmendment that transfers an allocation makes its new_allocation_id an
--     allocation of the receiving institution (or the same one), from the transfer's seq.
--  4. An AllocationAmendment that revokes or transfers (end = its effective_from_ms) or sets a
--     new end, recorded
--     after an interval, cuts the interval at that end; the earliest such end wins (a later
--     extension does not bring usage back).
--  5. The interval is clipped to the period; used GPU-ms = GPUs × ms.
--  6. Outages declared for an allocation (recorded after the allocation; before or after the
--     usage) and not withdrawn later (an OutageWithdrawal naming it) credit, per allocation,
--     min(GPUs of its counted usage, GPUs out at that instant) × ms: each GPU out once.
--  GPU-hour caps move usage between `usage` and `beyond_cap`, `held` or `refused` lines (by the
--  programme's over-cap rule) but not its GPU-ms, and rate
--  or co-pay changes split lines without changing their sum: neither is needed here.

CREATE OR REPLACE TEMP TABLE reg AS SELECT * FROM registry_raw WHERE outcome = 1;
CREATE OR REPLACE TEMP TABLE acc AS SELECT * FROM usage_raw WHERE outcome = 1;

-- Allocations: the first accepted record (an identical re-announcement changes nothing); and
-- (rule 3b) those that continue one after an accepted transfer, recorded at the transfer's seq,
-- with the receiving institution (empty to_institution_id: the same one).
CREATE OR REPLACE TEMP TABLE alloc AS
WITH RECURSIVE announced AS (
  SELECT allocation_id, arg_min(institution_id, seq) AS institution_id,
         arg_min(program, seq) AS program, min(seq) AS seq
  FROM reg WHERE body = 'allocation' GROUP BY allocation_id
), moved AS (
  SELECT allocation_id, new_allocation_id, to_institution_id, seq
  FROM reg WHERE body = 'allocation_amendment' AND coalesce(new_allocation_id, '') <> ''
), chain(allocation_id, institution_id, program, seq) AS (
  SELECT allocation_id, institution_id, program, seq FROM announced
  UNION ALL
  SELECT m.new_allocation_id,
         CASE WHEN coalesce(m.to_institution_id, '') = '' THEN c.institution_id
              ELSE m.to_institution_id END,
         c.program, m.seq
  FROM chain c JOIN moved m ON m.allocation_id = c.allocation_id
)
SELECT * FROM chain;

-- Corrections, with the seq of the accepted event they name (NULL: none).
CREATE OR REPLACE TEMP TABLE corr AS
SELECT c.seq, c.source_id, c.event_id, c.target_event_id, c.has_replacement,
       t.seq AS target_seq
FROM acc c
LEFT JOIN acc t ON t.source_id = c.source_id AND t.event_id = c.target_event_id
                AND t.body IN ('usage', 'correction')
WHERE c.body = 'correction';

-- For each target: the first correction recorded after it (rule 2).
CREATE OR REPLACE TEMP TABLE first_corr AS
SELECT source_id, target_event_id, min(seq) AS seq
FROM corr WHERE seq > target_seq GROUP BY source_id, target_event_id;

-- Intervals that came into existence (rule 2): usage events, and the replacements of the
-- corrections that acted on an existing interval.
CREATE OR REPLACE TEMP TABLE created AS
WITH RECURSIVE made(seq, source_id, event_id) AS (
  SELECT seq, source_id, event_id FROM acc WHERE body = 'usage'
  UNION ALL
  SELECT c.seq, c.source_id, c.event_id
  FROM made t
  JOIN first_corr f ON f.source_id = t.source_id AND f.target_event_id = t.event_id
  JOIN corr c ON c.seq = f.seq
  WHERE c.has_replacement
)
SELECT * FROM made;

-- Removed: created intervals that a correction acted on.
CREATE OR REPLACE TEMP TABLE removed AS
SELECT t.seq FROM created t
JOIN first_corr f ON f.source_id = t.source_id AND f.target_event_id = t.event_id;

CREATE OR REPLACE TEMP TABLE live AS
SELECT a.seq, a.source_id, a.event_id, a.allocation_id, a.gpu_model, a.gpu_count,
       a.start_ms, a.end_ms
FROM acc a JOIN created USING (seq)
WHERE a.seq NOT IN (SELECT seq FROM removed);

-- Rule 4: the earliest end set by a revocation or new end recorded after the interval.
CREATE OR REPLACE TEMP TABLE cut AS
WITH amend AS (
  SELECT allocation_id, seq, CASE WHEN revoke THEN effective_from_ms ELSE new_end_ms END AS end_ms
  FROM reg WHERE body = 'allocation_amendment' AND (revoke OR new_end_ms IS NOT NULL)
)
SELECT l.seq, min(a.end_ms) AS cut_ms
FROM live l JOIN amend a ON a.allocation_id = l.allocation_id AND a.seq > l.seq
GROUP BY l.seq;

-- Rule 3c: the operator's re-rating recorded after the interval, of its programme and model (or
-- every model): the earliest one (the scenario has at most one per interval; with several only
-- the earliest is modelled).
CREATE OR REPLACE TEMP TABLE rerate AS
SELECT l.seq, min(r.seq) AS r_seq, arg_min(r.start_ms, r.seq) AS r_from,
       arg_min(r.end_ms, r.seq) AS r_to
FROM live l JOIN alloc al ON al.allocation_id = l.allocation_id
JOIN reg r ON r.body = 'rerating' AND r.program = al.program
           AND (r.gpu_model = 0 OR r.gpu_model = l.gpu_model) AND r.seq > l.seq
GROUP BY l.seq;

-- The registries that price an interval: its own (recorded before it) over all of it, and a
-- re-rating's (recorded before the re-rating) over the re-rating's range.
CREATE OR REPLACE TEMP TABLE views AS
SELECT seq, seq AS asof, 0 AS is_rerate, -9223372036854775807 AS v_from,
       9223372036854775807 AS v_to FROM live
UNION ALL
SELECT seq, r_seq, 1, r_from, r_to FROM rerate;

-- Rule 3: the first instant from which the interval can be priced, in each view.
CREATE OR REPLACE TEMP TABLE priced_views AS
WITH inst AS (
  SELECT v.seq, v.asof, min(r.effective_from_ms) AS from_ms,
         arg_min(r.inst_type, r.effective_from_ms) AS inst_type
  FROM views v JOIN live l ON l.seq = v.seq JOIN alloc al ON al.allocation_id = l.allocation_id
  JOIN reg r ON r.body = 'institution' AND r.institution_id = al.institution_id AND r.seq < v.asof
  GROUP BY v.seq, v.asof
), rate AS (
  SELECT v.seq, v.asof, min(r.effective_from_ms) AS from_ms
  FROM views v JOIN live l ON l.seq = v.seq JOIN alloc al ON al.allocation_id = l.allocation_id
  JOIN reg r ON r.body = 'rate_card' AND r.program = al.program AND r.gpu_model = l.gpu_model
             AND r.seq < v.asof
  GROUP BY v.seq, v.asof
), copay AS (
  SELECT i.seq, i.asof, min(r.effective_from_ms) AS from_ms
  FROM inst i JOIN reg r ON r.body = 'copay_policy' AND r.inst_type = i.inst_type
                        AND r.seq < i.asof
  GROUP BY i.seq, i.asof
)
SELECT v.seq, v.is_rerate, al.institution_id, l.allocation_id, l.gpu_count,
       greatest(l.start_ms, getvariable('p0'), inst.from_ms, rate.from_ms, copay.from_ms, v.v_from)
         AS lo,
       least(l.end_ms, getvariable('p1'), coalesce(cut.cut_ms, l.end_ms), v.v_to) AS hi
FROM views v
JOIN live l ON l.seq = v.seq
JOIN alloc al ON al.allocation_id = l.allocation_id AND al.seq < l.seq
JOIN inst ON inst.seq = v.seq AND inst.asof = v.asof
JOIN rate ON rate.seq = v.seq AND rate.asof = v.asof
JOIN copay ON copay.seq = v.seq AND copay.asof = v.asof
LEFT JOIN cut ON cut.seq = l.seq;

-- The priced stretches, disjoint: the own view's [lo, hi) (a suffix of the interval), and what a
-- re-rating prices before it.
CREATE OR REPLACE TEMP TABLE priced AS
WITH own AS (SELECT * FROM priced_views WHERE is_rerate = 0 AND hi > lo)
SELECT seq, institution_id, allocation_id, gpu_count, lo, hi FROM own
UNION ALL
SELECT r.seq, r.institution_id, r.allocation_id, r.gpu_count, r.lo,
       CASE WHEN o.seq IS NULL THEN r.hi ELSE least(r.hi, o.lo) END AS hi
FROM priced_views r LEFT JOIN own o ON o.seq = r.seq
WHERE r.is_rerate = 1;

CREATE OR REPLACE TEMP TABLE counted AS SELECT * FROM priced WHERE hi > lo;

-- Rule 3b: what cannot be priced is not dropped: the invoice of the allocation's institution shows
-- it as an `unpriced` line (GPU-ms, 0 won). It is the live interval's stretch in the period (cut
-- as in rule 4) less its priced stretch; no outage credits it.
CREATE OR REPLACE TEMP TABLE unpriced AS
WITH whole AS (
  SELECT l.seq, al.institution_id, l.gpu_count,
         greatest(l.start_ms, getvariable('p0')) AS lo,
         least(l.end_ms, getvariable('p1'), coalesce(cut.cut_ms, l.end_ms)) AS hi
  FROM live l
  JOIN alloc al ON al.allocation_id = l.allocation_id AND al.seq < l.seq
  LEFT JOIN cut ON cut.seq = l.seq
)
SELECT w.institution_id,
       sum(w.gpu_count * ((w.hi - w.lo) - coalesce(p.ms, 0)))::BIGINT AS unpriced_gpu_ms
FROM whole w
LEFT JOIN (SELECT seq, sum(greatest(hi - lo, 0)) AS ms FROM priced GROUP BY seq) p
  ON p.seq = w.seq
WHERE w.hi > w.lo
GROUP BY w.institution_id;

-- Rule 6: outage levels per allocation as stretches [s, e) with the GPUs out.
CREATE OR REPLACE TEMP TABLE outage_levels AS
WITH o AS (
  SELECT o.allocation_id, o.gpu_count, o.start_ms, o.end_ms
  FROM acc o JOIN alloc al ON al.allocation_id = o.allocation_id AND al.seq < o.seq
  WHERE o.body = 'outage'
    AND NOT EXISTS (SELECT 1 FROM acc w
                    WHERE w.body = 'outage_withdrawal' AND w.source_id = o.source_id
                      AND w.target_event_id = o.event_id AND w.seq > o.seq)
), pts AS (
  SELECT allocation_id, t, sum(d) AS d FROM (
    SELECT allocation_id, start_ms AS t, gpu_count AS d FROM o
    UNION ALL SELECT allocation_id, end_ms, -gpu_count FROM o
  ) GROUP BY allocation_id, t
), lv AS (
  SELECT allocation_id, t AS s, lead(t) OVER w AS e,
         sum(d) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS out_gpus
  FROM pts WINDOW w AS (PARTITION BY allocation_id ORDER BY t)
)
SELECT * FROM lv WHERE e IS NOT NULL AND out_gpus > 0;

-- Rule 6: usage levels per allocation (the GPUs of its counted usage at each instant), and the
-- credit: min(usage GPUs, GPUs out) over time, per allocation, so that a GPU out is credited
-- once however many intervals ran on the allocation then.
CREATE OR REPLACE TEMP TABLE usage_levels AS
WITH pts AS (
  SELECT allocation_id, t, sum(d) AS d FROM (
    SELECT allocation_id, lo AS t, gpu_count AS d FROM counted
    UNION ALL SELECT allocation_id, hi, -gpu_count FROM counted
  ) GROUP BY allocation_id, t
), lv AS (
  SELECT allocation_id, t AS s, lead(t) OVER w AS e,
         sum(d) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS used_gpus
  FROM pts WINDOW w AS (PARTITION BY allocation_id ORDER BY t)
)
SELECT * FROM lv WHERE e IS NOT NULL AND used_gpus > 0;

CREATE OR REPLACE TEMP TABLE credits AS
SELECT al.institution_id,
       sum(least(u.used_gpus, v.out_gpus) * (least(u.e, v.e) - greatest(u.s, v.s)))
         AS credit_gpu_ms
FROM usage_levels u JOIN outage_levels v
  ON v.allocation_id = u.allocation_id AND v.s < u.e AND v.e > u.s
JOIN alloc al ON al.allocation_id = u.allocation_id
GROUP BY al.institution_id;

CREATE OR REPLACE TABLE xcheck AS
WITH priced_per AS (
  SELECT u.institution_id, u.used_gpu_ms,
         (-coalesce(cr.credit_gpu_ms, 0))::BIGINT AS credit_gpu_ms
  FROM (SELECT institution_id, sum(gpu_count * (hi - lo))::BIGINT AS used_gpu_ms
        FROM counted GROUP BY institution_id) u
  LEFT JOIN credits cr USING (institution_id)
), per AS (
  SELECT coalesce(p.institution_id, u.institution_id) AS institution_id,
         coalesce(p.used_gpu_ms, 0) AS used_gpu_ms, coalesce(p.credit_gpu_ms, 0) AS credit_gpu_ms,
         coalesce(u.unpriced_gpu_ms, 0) AS unpriced_gpu_ms
  FROM priced_per p FULL OUTER JOIN (SELECT * FROM unpriced WHERE unpriced_gpu_ms <> 0) u
    ON u.institution_id = p.institution_id
), net AS (
  SELECT *, used_gpu_ms + credit_gpu_ms + unpriced_gpu_ms AS net_gpu_ms FROM per
), milli AS (
  -- thousandths of a GPU-hour, rounded half away from zero
  SELECT *, sign(net_gpu_ms) * ((abs(net_gpu_ms) + 1800) // 3600) AS mh FROM net
)
SELECT institution_id, used_gpu_ms, credit_gpu_ms, unpriced_gpu_ms, net_gpu_ms,
       CASE WHEN mh < 0 THEN '-' ELSE '' END || (abs(mh) // 1000)::VARCHAR || '.' ||
       lpad((abs(mh) % 1000)::VARCHAR, 3, '0') AS net_gpu_hours
FROM milli;
