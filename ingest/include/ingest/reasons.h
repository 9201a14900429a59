// Reason codes for rejected inputs. Each is recorded in the ledger entry of the rejected input;
// docs/REASON_CODES.md is the table operators and auditors read (kept in sync by a test).
#pragma once

#include <span>
#include <string_view>

namespace gpuledger::ingest::reason {

inline constexpr char kMalformed[] = "MALFORMED";
inline constexpr char kUnknownSchemaVersion[] = "UNKNOWN_SCHEMA_VERSION";
inline constexpr char kMissingField[] = "MISSING_FIELD";
inline constexpr char kInvalidField[] = "INVALID_FIELD";
inline constexpr char kCspTopicMismatch[] = "CSP_TOPIC_MISMATCH";
inline constexpr char kEmptyInterval[] = "EMPTY_INTERVAL";
inline constexpr char kDurationTooLong[] = "DURATION_TOO_LONG";
inline constexpr char kConflictingDuplicate[] = "CONFLICTING_DUPLICATE";
inline constexpr char kUnknownTopic[] = "UNKNOWN_TOPIC";
inline constexpr char kFutureTimestamp[] = "FUTURE_TIMESTAMP";
inline constexpr char kTimeOutOfRange[] = "TIME_OUT_OF_RANGE";
inline constexpr char kUnknownAllocation[] = "UNKNOWN_ALLOCATION";
inline constexpr char kAllocationOfOtherCsp[] = "ALLOCATION_OF_OTHER_CSP";
inline constexpr char kWrongGpuModel[] = "WRONG_GPU_MODEL";
inline constexpr char kOutsideAllocationWindow[] = "OUTSIDE_ALLOCATION_WINDOW";
inline constexpr char kOverlappingInterval[] = "OVERLAPPING_INTERVAL";
inline constexpr char kGpusOverGrant[] = "GPUS_OVER_GRANT";
inline constexpr char kUnknownPool[] = "UNKNOWN_POOL";
inline constexpr char kGpusOverPool[] = "GPUS_OVER_POOL";
inline constexpr char kOwnUseDisplacesProgramme[] = "OWN_USE_DISPLACES_PROGRAMME";
inline constexpr char kUnknownCorrectionTarget[] = "UNKNOWN_CORRECTION_TARGET";
inline constexpr char kAlreadyCorrected[] = "ALREADY_CORRECTED";
// Registry events (codes defined with the registry in ledger/registry.h).
inline constexpr char kRegistryConflict[] = "REGISTRY_CONFLICT";
inline constexpr char kUnknownInstitution[] = "UNKNOWN_INSTITUTION";
inline constexpr char kInvalidAmendment[] = "INVALID_AMENDMENT";
inline constexpr char kGrantOverPool[] = "GRANT_OVER_POOL";
inline constexpr char kIneligibleInstitution[] = "INELIGIBLE_INSTITUTION";
inline constexpr char kOverServerLimit[] = "OVER_SERVER_LIMIT";
inline constexpr char kWindowTooLong[] = "WINDOW_TOO_LONG";
inline constexpr char kMissingAllocationMetadata[] = "MISSING_ALLOCATION_METADATA";
inline constexpr char kCopayOutOfBounds[] = "COPAY_OUT_OF_BOUNDS";
inline constexpr char kPeriodAlreadyClosed[] = "PERIOD_ALREADY_CLOSED";
inline constexpr char kPeriodCloseOutOfOrder[] = "PERIOD_CLOSE_OUT_OF_ORDER";
inline constexpr char kPeriodNotEnded[] = "PERIOD_NOT_ENDED";

struct ReasonInfo {
  std::string_view code;
  std::string_view meaning;
  std::string_view what_to_do;
};

// Every reason code with its meaning and what the sender should do, in table order.
std::span<const ReasonInfo> AllReasons();

}  // namespace gpuledger::ingest::reason
