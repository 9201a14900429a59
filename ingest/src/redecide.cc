#include "ingest/redecide.h"

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "ingest/reasons.h"
#include "ingest/validator.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

namespace {

std::string OutcomeOf(const ledger::Candidate& c) {
  if (!c.reason_code.empty()) return c.reason_code;
  return c.park ? "PARKED" : "ACCEPTED";
}

std::string RecordedOutcome(const v1::LedgerEntry& e) {
  if (e.outcome() == v1::REJECTED) return e.reason_code();
  return e.outcome() == v1::PARKED ? "PARKED" : "ACCEPTED";
}

}  // namespace

absl::StatusOr<RedecideReport> Redecide(const ledger::Ledger& ledger,
                                        const RedecideOptions& options) {
  ValidationLimits limits;
  limits.topics = options.topics;
  // A recent-interval index of 0 bytes: every check reads the state store, as the smallest
  // ingest would; decisions do not depend on it.
  Validator validator(limits);
  const uint64_t head = ledger.head().seq;
  RedecideReport report;
  GPULEDGER_RETURN_IF_ERROR(
      ledger.Scan(1, [&](const ledger::StoredEntry& stored) -> absl::StatusOr<bool> {
        if (stored.seq > head) return false;
        const v1::LedgerEntry& e = stored.entry;
        ++report.entries;
        const std::string recorded = RecordedOutcome(e);
        std::string decided;
        std::string detail;
        if (e.outcome() == v1::REJECTED && e.reason_code() == reason::kConflictingDuplicate) {
          GPULEDGER_ASSIGN_OR_RETURN(auto first, ledger.LookupEvent(e.source_id(), e.event_id()));
          ++report.duplicates_checked;
          decided = first.has_value() && first->seq < stored.seq ? recorded : "ACCEPTED";
          if (decided != recorded) detail = "the ledger holds no earlier entry of this identity";
        } else {
          RawMessage m;
          m.topic = e.topic();
          m.partition = e.partition();
          m.offset = e.offset();
          m.kafka_timestamp_ms = e.kafka_timestamp_ms();
          m.kafka_timestamp_type = e.kafka_timestamp_type();
          m.payload = e.payload();
          for (const v1::KafkaHeader& h : e.headers()) m.headers.emplace_back(h.key(), h.value());
          Decoded d = Decode(std::move(m), validator.limits(), e.recorded_at_ms());
          d.candidate.resolves_seq = e.resolves_seq();
          if (d.candidate.reason_code.empty()) validator.Check(&d);
          decided = OutcomeOf(d.candidate);
          detail = d.candidate.reason_detail;
          // A CloudEvent's event is recorded beside its payload, and settlement reads that: it
          // must be what the payload and headers decode to.
          if (decided == recorded && d.candidate.decoded_event != e.decoded_event()) {
            decided = "DECODED_EVENT_DIFFERS";
            detail = "the recorded decoded_event is not what the payload and headers decode to";
          }
        }
        if (decided == recorded) {
          ++report.agree;
        } else {
          ++report.differ;
          if (report.differences.size() < options.max_listed) {
            report.differences.push_back(Redecision{stored.seq, recorded, decided, detail});
          }
        }
        // The state follows what the ledger recorded, as ingest's did.
        validator.Recorded(DecodedFromEntry(e), stored.seq);
        GPULEDGER_RETURN_IF_ERROR(validator.status());
        if (options.progress && options.progress_every > 0 &&
            report.entries % options.progress_every == 0) {
          options.progress(report.entries, head);
        }
        return true;
      }));
  if (options.progress) options.progress(report.entries, head);
  return report;
}

}  // namespace gpuledger::ingest
