#include "ingest/reasons.h"

namespace gpuledger::ingest::reason {

namespace {
constexpr ReasonInfo kReasons[] = {
    {kMalformed,
     "The message bytes do not decode as the protobuf message the topic carries, "
     "or carry fields that message does not define (another message's bytes); or a CloudEvent "
     "that is not a usage event (the detail says why).",
     "Publish binary gpuledger.v1 messages, or CloudEvents of type gpuledger.v1.UsageEvent, one "
     "a message (docs/FORMATS.md); check the producer's serializer."},
    {kUnknownSchemaVersion, "schema_version is not one this build reads (only 1).",
     "Set schema_version = 1, or upgrade gpuledger before sending a newer schema."},
    {kMissingField,
     "A required field is absent or empty (event id, CSP id, body, allocation "
     "id, GPU model, ...). The detail names the field.",
     "Fill the field and send the event again under a new event id."},
    {kInvalidField,
     "A field is present but out of range (an id too long or not printable "
     "ASCII, text with control characters or invalid UTF-8, GPU count 0 or over "
     "1,000,000, co-pay over 100%, ...). The detail names the field; "
     "docs/REASON_CODES.md lists every field's limit.",
     "Correct the value and send the event again under a new event id."},
    {kCspTopicMismatch, "The event's csp_id is not the CSP whose topic it arrived on.",
     "Each CSP publishes only on gpuledger.usage.<its own csp_id>."},
    {kEmptyInterval, "end_ms is not after start_ms: zero or negative duration.",
     "Send intervals with end_ms > start_ms."},
    {kDurationTooLong, "The interval is longer than the configured maximum (default 31 days).",
     "Split long usage into intervals of at most the maximum."},
    {kConflictingDuplicate,
     "The event id was already recorded with different content. The "
     "original stands; this one is kept for review.",
     "Never reuse an event id: send a Correction, or a new event id."},
    {kUnknownTopic,
     "The message came from a topic gpuledger does not read events from, or from a "
     "usage topic whose name cannot be a CSP id.",
     "Check the subscription; this indicates a misconfigured consumer."},
    {kFutureTimestamp,
     "The interval ends later than the time its message was recorded plus the "
     "allowed clock skew (default 15 min): usage cannot be reported before "
     "it happened. The time of record is the broker's log-append time, or ingest's "
     "clock; never the producer's CreateTime.",
     "Report usage after it ends; check the metering host's clock."},
    {kTimeOutOfRange,
     "A point in time (an interval's start or end, an effective date, an emitted time) is "
     "outside 2020-01-01 to 2100-01-01 UTC: not a time the programmes can have.",
     "Send times in ms since the Unix epoch (UTC); check the producer's units and clock."},
    {kUnknownAllocation,
     "No allocation with this id was announced by the registry, even after "
     "the grace period (default 1 h) during which the event was PARKED; or "
     "an amendment or an over-cap release names an unknown allocation.",
     "Check the allocation id; ask the operator whether the allocation was granted."},
    {kAllocationOfOtherCsp, "The allocation is hosted by another CSP.",
     "Report only usage of allocations hosted on your own GPUs."},
    {kWrongGpuModel, "The GPU model differs from the allocation's.",
     "Report the model the allocation was granted on."},
    {kOutsideAllocationWindow,
     "The interval (usage, or an outage of the allocation) is not inside the "
     "allocation's window [start, end) as amended (extended, shortened, revoked or "
     "transferred: after a transfer the allocation continuing it takes the usage).",
     "Report only usage inside the granted period."},
    {kOverlappingInterval,
     "The interval overlaps an accepted interval of the same allocation "
     "and node (double billing).",
     "Send each node's time once; fix an earlier interval with a Correction."},
    {kGpusOverGrant,
     "More GPUs than granted: the interval's own count, or the sum of "
     "concurrent intervals of the allocation at some instant; for an outage of an "
     "allocation, more GPUs out of service at once than the grant.",
     "Report the GPUs actually used; they cannot exceed the grant."},
    {kUnknownPool,
     "Own use or a pool outage for a (program, GPU model) pool the CSP does not "
     "host according to the registry.",
     "Check program and model; the operator announces pools."},
    {kGpusOverPool,
     "Own use of more GPUs than the pool holds, alone or with the CSP's own use already "
     "accepted at the same time; or a pool outage of more GPUs than the pool holds, alone or "
     "with the pool's outages already accepted at the same time.",
     "Report the GPUs actually used or out of service."},
    {kOwnUseDisplacesProgramme,
     "Own use that would displace programme users: at some instant the usage recorded on the "
     "pool's allocations, the own use already accepted and this own use are more GPUs than the "
     "pool holds (the state's users come first).",
     "Use for yourself only the GPUs programme users leave free; the detail names the instant "
     "and how many fit."},
    {kUnknownCorrectionTarget,
     "The corrected event id was never accepted from this CSP (or, for an outage withdrawal, is "
     "not an accepted outage of this CSP).",
     "Correct only events of yours that were accepted (see ledger show / the rejected topic)."},
    {kAlreadyCorrected,
     "The corrected event was already corrected or cancelled, or the outage already withdrawn.",
     "Correct the latest correction instead (its event id); an outage is withdrawn once."},
    {kRegistryConflict,
     "A registry record contradicts one already recorded (same key and "
     "effective date with another value, or an allocation re-announced "
     "with other terms, or a transfer naming an allocation id already used).",
     "Publish a record with a new effective date, or an AllocationAmendment."},
    {kUnknownInstitution,
     "An allocation, or a transfer of one, names an institution never announced.",
     "Announce the institution first."},
    {kInvalidAmendment,
     "An amendment is impossible: its date is outside the allocation's "
     "window, the new end is not after it, it changes nothing (a transfer to the allocation's "
     "own CSP and institution), or the allocation was transferred (amend the one continuing "
     "it).",
     "Fix the amendment's date or change."},
    {kGrantOverPool,
     "An allocation, a resize, an extension or a transfer would grant more GPUs on a pool "
     "(CSP, program, GPU model) than the pool holds at some instant, counting every allocation "
     "on it.",
     "Grant fewer GPUs or a later window, or record a larger pool (GpuPool) first."},
    {kIneligibleInstitution,
     "An allocation (or a transfer) is for an institution whose type the programme's policy "
     "(ProgrammePolicy, in force at the allocation's start or the transfer's date) does not "
     "admit: e.g. a university on the HPC lease.",
     "Grant it on a programme the institution's type may use, or correct the institution's type."},
    {kOverServerLimit,
     "An allocation, a resize, an extension or a transfer would give one institution more "
     "servers on a "
     "programme than its policy allows at some instant (all the institution's allocations on it "
     "together, GPUs counted in servers by the policy's server sizes), or the policy gives no "
     "server size for the allocation's GPU model.",
     "Grant fewer GPUs, or end another allocation of the institution first."},
    {kWindowTooLong,
     "An allocation, or an extension of one, would run longer than the programme's policy "
     "allows (max_window_ms, counted from the allocation's start, or from the first start of "
     "a chain of transfers, extensions included).",
     "Grant a shorter window; a longer need is a new application."},
    {kMissingAllocationMetadata,
     "An allocation names no call, agency or project where its programme's policy in force at "
     "its start requires all three (allocation_metadata_required).",
     "Announce the allocation with its call_id, agency_id and project_id."},
    {kCopayOutOfBounds,
     "A co-pay policy is outside a programme's co-pay bounds for its institution type while "
     "both are in force, or a programme policy's bounds exclude a co-pay policy in force: e.g. "
     "15% for SMEs where SMEs pay under 10%.",
     "Publish a co-pay within the bounds, or the bounds the programme actually set."},
    {kPeriodAlreadyClosed, "A period close names a period that is closed already.",
     "Nothing to do: a closed period never changes; later events show up as adjustments."},
    {kPeriodCloseOutOfOrder,
     "A period close skips a period or names an unreadable period: periods close in order.",
     "Close the earlier open period first (`gpuledger settle status` lists them)."},
    {kPeriodNotEnded,
     "A period close was emitted, or a close marker (CloseMarker, written by `settle close`) "
     "recorded, before the period ended (in KST).",
     "Wait until the month is over, then close it again."},
};
}  // namespace

std::span<const ReasonInfo> AllReasons() { return kReasons; }

}  // namespace gpuledger::ingest::reason
