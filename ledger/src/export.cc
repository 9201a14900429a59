#include "ledger/export.h"

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

namespace {

void AppendDelimited(const v1::ExportRecord& r, std::string* out) {
  google::protobuf::io::StringOutputStream sink(out);
  google::protobuf::util::SerializeDelimitedToZeroCopyStream(r, &sink);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExportWriter>> ExportWriter::Start(const Ledger& ledger,
                                                                  const ExportOptions& options) {
  std::unique_ptr<ExportWriter> w(new ExportWriter(ledger));
  const Head head = ledger.head();
  ExportSummary& summary = w->summary_;
  summary.first_seq = std::max<uint64_t>(options.from_seq, 1);
  summary.last_seq = options.to_seq == 0 ? head.seq : std::min(options.to_seq, head.seq);
  if (summary.first_seq > summary.last_seq + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "nothing to export: from seq ", summary.first_seq, " is past the head ", head.seq));
  }
  std::vector<v1::Checkpoint> records;
  GPULEDGER_RETURN_IF_ERROR(ledger.ScanCheckpoints([&](const v1::Checkpoint& cp) {
    records.push_back(cp);
    return absl::OkStatus();
  }));
  // Widen a slice of a signed ledger to signed checkpoints at both ends (see ExportOptions).
  std::optional<v1::Checkpoint> base;
  if (ledger.checkpoint_interval() > 0) {
    for (const v1::Checkpoint& cp : records) {
      if (cp.seq() < summary.first_seq && cp.next_public_key_pem().empty()) base = cp;
    }
    summary.first_seq = base ? base->seq() + 1 : 1;
    if (options.to_seq != 0) {
      for (const v1::Checkpoint& cp : records) {
        if (cp.seq() >= summary.last_seq) {
          summary.last_seq = cp.seq();
          break;
        }
      }
    }
  }
  Digest prev = kZeroDigest;
  if (summary.first_seq > 1) {
    GPULEDGER_ASSIGN_OR_RETURN(StoredEntry before, ledger.Get(summary.first_seq - 1));
    prev = before.hash;
  }
  // Before a slice's first entry: the key rotations before it, then the base checkpoint and the
  // rotations at its seq (in key order: the base is signed by the key they replace).
  std::vector<v1::Checkpoint> before_first;
  for (const v1::Checkpoint& cp : records) {
    if (cp.seq() >= summary.first_seq && cp.seq() <= summary.last_seq) {
      w->checkpoints_[cp.seq()].push_back(cp);
    } else if (base && (cp.seq() == base->seq() ||
                        (cp.seq() < base->seq() && !cp.next_public_key_pem().empty()))) {
      before_first.push_back(cp);
    }
  }
  v1::ExportRecord rec;
  auto* h = rec.mutable_header();
  h->set_format("gpuledger-export");
  h->set_format_version(2);
  h->set_first_seq(summary.first_seq);
  h->set_last_seq(summary.last_seq);
  h->set_prev_hash(ToBytes(prev));
  h->set_checkpoint_interval(ledger.checkpoint_interval());
  h->set_public_key_pem(ledger.public_key_pem());
  AppendDelimited(rec, &w->header_);
  for (const v1::Checkpoint& cp : before_first) {
    v1::ExportRecord c;
    *c.mutable_checkpoint() = cp;
    AppendDelimited(c, &w->header_);
    ++summary.checkpoints;
  }
  w->next_seq_ = summary.first_seq;
  return w;
}

absl::StatusOr<bool> ExportWriter::Next(std::string* out, size_t max_bytes) {
  if (!header_written_) {
    out->append(header_);
    header_written_ = true;
  }
  if (next_seq_ > summary_.last_seq) return false;
  const size_t start = out->size();
  absl::Status st = ledger_.Scan(next_seq_, [&](const StoredEntry& e) -> absl::StatusOr<bool> {
    if (e.seq > summary_.last_seq) return false;
    v1::ExportRecord r;
    auto* x = r.mutable_entry();
    x->set_seq(e.seq);
    x->set_entry(e.bytes);
    x->set_hash(ToBytes(e.hash));
    AppendDelimited(r, out);
    ++summary_.entries;
    if (auto it = checkpoints_.find(e.seq); it != checkpoints_.end()) {
      for (const v1::Checkpoint& cp : it->second) {
        v1::ExportRecord c;
        *c.mutable_checkpoint() = cp;
        AppendDelimited(c, out);
        ++summary_.checkpoints;
      }
    }
    next_seq_ = e.seq + 1;
    return out->size() - start < max_bytes;
  });
  GPULEDGER_RETURN_IF_ERROR(st);
  return next_seq_ <= summary_.last_seq;
}

absl::StatusOr<ExportSummary> ExportLedger(const Ledger& ledger, std::ostream& out,
                                           const ExportOptions& options) {
  GPULEDGER_ASSIGN_OR_RETURN(std::unique_ptr<ExportWriter> w, ExportWriter::Start(ledger, options));
  std::string chunk;
  uint64_t reported = 0;
  while (true) {
    chunk.clear();
    GPULEDGER_ASSIGN_OR_RETURN(bool more, w->Next(&chunk));
    out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    if (!out) return absl::UnavailableError("cannot write the export (disk full or closed pipe?)");
    const uint64_t last = w->summary().first_seq + w->summary().entries - 1;
    if (options.progress && last / options.progress_every > reported) {
      reported = last / options.progress_every;
      options.progress(last);
    }
    if (!more) break;
  }
  out.flush();
  if (!out) return absl::UnavailableError("cannot write the export (disk full or closed pipe?)");
  return w->summary();
}

absl::Status ReadExport(std::istream& in,
                        const std::function<absl::Status(const StoredEntry&)>& visit) {
  google::protobuf::io::IstreamInputStream stream(&in);
  v1::ExportRecord record;
  bool clean_eof = false;
  if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&record, &stream, &clean_eof) ||
      !record.has_header() || record.header().format() != "gpuledger-export") {
    return absl::InvalidArgumentError("not a gpuledger export: no export header");
  }
  uint64_t expected = record.header().first_seq();
  while (true) {
    record.Clear();
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&record, &stream, &clean_eof)) {
      if (clean_eof) return absl::OkStatus();
      return absl::DataLossError(
          absl::StrCat("the export is truncated or garbled after entry ", expected - 1));
    }
    if (!record.has_entry()) continue;
    StoredEntry e;
    e.seq = record.entry().seq();
    if (e.seq != expected) {
      return absl::DataLossError(
          absl::StrCat("export entry ", e.seq, " where ", expected, " was expected"));
    }
    e.bytes = record.entry().entry();
    if (!FromBytes(record.entry().hash(), &e.hash) || !e.entry.ParseFromString(e.bytes)) {
      return absl::DataLossError(absl::StrCat("export entry ", e.seq, " does not decode"));
    }
    GPULEDGER_RETURN_IF_ERROR(visit(e));
    ++expected;
  }
}

}  // namespace gpuledger::ledger
