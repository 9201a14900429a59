#include "ingest/reasons.h"

namespace gpuledger::ingest::reason {

namespace {
constexpr ReasonInfo kReasons[] = {
    {kMalformed, "The message bytes do not decode as the protobuf message the topic carries.",
     "Publish binary gpuledger.v1 messages; check the producer's serializer."},
    {kUnknownSchemaVersion, "schema_version is not one this build reads (only 1).",
     "Set schema_version = 1, or upgrade gpuledger before sending a newer schema."},
    {kMissingField,
     "A required field is absent or empty (event id, CSP id, body, allocation "
     "id, GPU model, ...). The detail names the field.",
     "Fill the field and send the event again under a new event id."},
    {kInvalidField,
     "A field is present but out of range (event id too long or not printable "
     "ASCII, GPU count 0, co-pay over 100%, ...). The detail names the field.",
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
    {kUnknownTopic, "The message came from a topic gpuledger does not read events from.",
     "Check the subscription; this indicates a misconfigured consumer."},
};
}  // namespace

std::span<const ReasonInfo> AllReasons() { return kReasons; }

}  // namespace gpuledger::ingest::reason
