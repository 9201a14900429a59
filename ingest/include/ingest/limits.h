// Fixed bounds on every field that comes from outside (a CSP's usage topic or the operator's
// registry topic), each with the reason for its number. Decide() rejects an event with a field
// outside its bound (INVALID_FIELD or TIME_OUT_OF_RANGE), so that nothing downstream (the
// validator's state store, the settlement store, documents, pages) ever sees a value it was not
// written for. docs/REASON_CODES.md ("Field limits") is the table senders read; a test keeps the
// two in step. Bounds that an operator may tune (interval length, clock skew, grace) are in
// ValidationLimits (decide.h) instead.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gpuledger::ingest::limits {

// Identifiers (event, allocation, institution, node, producer and CSP ids): 1 to 128 bytes of
// printable ASCII without spaces (0x21..0x7e). Ids become parts of keys, Kafka message keys,
// file names in exports and URLs: no separator, control or multi-byte character can occur.
inline constexpr size_t kIdBytesMax = 128;

// A CSP id also names the CSP's topic (gpuledger.usage.<csp_id>): it must be a legal Kafka topic
// suffix: ASCII letters, digits, '.', '_' and '-', at most 64 bytes (Kafka allows 249 for the
// whole name, and the prefix and a namespace take part of it). "operator" is the registry's
// identity (kOperatorSourceId) and is never a CSP.
inline constexpr size_t kCspIdBytesMax = 64;

// Free text shown to people (an institution's name, an outage's cause, a correction's reason):
// valid UTF-8 without control characters (C0, DEL, C1) and without the Unicode bidirectional
// controls (U+202A..U+202E, U+2066..U+2069) that can make a printed line read differently from
// its bytes. A name of 100 Hangul syllables is 300 bytes.
inline constexpr size_t kNameBytesMax = 400;        // Institution.name
inline constexpr size_t kBudgetNoteBytesMax = 256;  // Budget.note
inline constexpr size_t kCauseBytesMax = 128;       // OutageInterval.cause: a short code
inline constexpr size_t kReasonBytesMax = 1024;     // Correction.reason: a sentence or two

// Instants (every *_ms field that is a point in time): from 2020-01-01T00:00:00Z to
// 2100-01-01T00:00:00Z, exclusive. The programmes began in 2025; nothing before 2020 is a real
// event, and a bound far below int64's keeps every sum and every period walk finite.
inline constexpr int64_t kTimeMinMs = 1'577'836'800'000;  // 2020-01-01T00:00:00Z
inline constexpr int64_t kTimeMaxMs = 4'102'444'800'000;  // 2100-01-01T00:00:00Z

// GPUs in one interval, allocation, outage, own use or pool: at most 1,000,000. The whole
// national plan is tens of thousands (13,000 secured, a 15,000-GPU centre planned); a million
// leaves room for growth while gpu_count x a century in ms stays far inside int64.
inline constexpr uint32_t kGpuCountMax = 1'000'000;

// A rate card's list price: at most 100,000,000 won per GPU-hour (an H200 GPU-hour lists at a
// few thousand won). With GPU counts and periods bounded above, a month's list price of one
// allocation stays below 2^63 won.
inline constexpr int64_t kKrwPerGpuHourMax = 100'000'000;

// An allocation's cap on subsidised use: at most kGpuCountMax GPUs for 100 years, in GPU-ms.
inline constexpr int64_t kGpuMsCapMax = int64_t{kGpuCountMax} * 100 * 366 * 86'400'000;

// A producer's sequence number: at most 2^53, so that it survives JSON tools that read numbers
// as doubles (the CSV and JSON documents carry it).
inline constexpr uint64_t kProducerSeqMax = uint64_t{1} << 53;

// GPUs per server in a programme policy's server sizes: 1 to 1,024 (an HGX server has 8; a rack
// counted as one server has at most a few hundred).
inline constexpr uint32_t kGpusPerServerMax = 1'024;

// A programme policy's longest allocation window: at most 100 years, the span of the instants.
inline constexpr int64_t kMaxWindowMsMax = int64_t{100} * 366 * 86'400'000;

// Usage partitions a period close names (PeriodClose.usage_offsets): at most 10,000 (a few
// dozen CSPs with a few partitions each; a close is one message).
inline constexpr size_t kCloseUsageOffsetsMax = 10'000;

// How long ingest holds a usage partition at a close marker whose close it has not read: 10
// minutes of its own clock. `settle close` publishes the close a moment after its markers; a
// marker whose close never comes (`settle close` stopped between the two, or its close refused)
// then lets its partition go on, with a warning, instead of holding it until some later close.
inline constexpr int64_t kCloseMarkerHoldMsMax = 10 * 60'000;

}  // namespace gpuledger::ingest::limits
