// The settlement store's key layout and value encodings, in one place (STYLE.md: outside data
// never shapes a key). Change them only with a bump of kFormatValue: a store of another format
// is rebuilt from the ledger when it is next opened for writing (OpenSettlement).
//
// Keys are a short ASCII prefix naming the record, then typed fields:
//   - a string field (ids, periods, free text such as an outage's cause) is its bytes with each
//     0x00 written as 0x00 0xFF, then the terminator 0x00 0x01. Any byte (0x00, 0x1f, 0xff,
//     invalid UTF-8) round-trips, no field can run into the next, and keys sort as the tuples
//     of their fields do (a string before every longer string it begins). Byte order is the
//     order of lines on an invoice and of rows on a statement, so a length prefix (which would
//     sort "b" before "aa") is not used;
//   - an unsigned integer is fixed-width big-endian; a signed one is big-endian with its sign
//     bit flipped, so that negative numbers sort first.
// Counters (GPU-ms totals) are 16-byte big-endian two's-complement signed 128-bit integers:
// 2^32 GPUs × the whole int64 time line fits, so applying an entry never wraps or fails; a
// document checks that what it prints fits its 64-bit fields.
//
//   s/format                                   → kFormatValue
//   s/options                                  → "vat_bp=<n>"
//   s/applied                                  → u64 seq, then the chain hash (32 bytes; none
//                                                if seq is 0)
//   r/ u64 seq                                 → RegistryEvent bytes, as in the ledger
//   c/ period                                  → u64 seq of the close
//   f/ period                                  → PeriodDocuments (frozen at close)
//   n/ issuer u32 year                         → i128 the last invoice number issued
//   l/ period line                             → i128 GPU-ms of the line
//   t/ period line                             → "" (line of a closed period changed since)
//   b/ period line                             → BilledLine (as billed so far)
//   rd/ u32 day csp u32 program u32 model allocation u32 type u32 measure
//                                              → i128 GPU-ms: the daily roll-up of the reports
//                                                (day: days since 1970-01-01 KST; measure:
//                                                RollupMeasure; own use and outages have no
//                                                allocation and type 0)
//   dk/ period csp u32 program u32 model u32 kind → i128 outage GPU-ms by OutageKind (reports)
//   u/ period u64 seq u32 n                    → Unpriced
//   i/ source event                            → StoredInterval
//   k/ allocation                              → i128 GPU-ms taken from the allocation's cap
//                                                (the first of a chain of transfers: one cap)
//   x/ allocation i64 start source event       → i64 end_ms (index: intervals of an allocation,
//                                                in order of start)
//   xl/ allocation                             → i64 the longest interval x/ ever held for it
//   o/ allocation u64 seq                      → StoredOutage
//   w/ pool                                    → i128 own-use GPU-ms
//   wv/ pool                                   → i128 Σ own-use GPU-ms × won per GPU-hour
//   wu/ pool                                   → i128 own-use GPU-ms with no rate in force
//   ow/ u32 program u32 model i64 start csp u64 seq → StoredOwnUse (an own-use interval's
//                                                valued slices, for re-rating)
//   tw/ pool, bw/ pool                         → "", OwnUseRow as billed
//   br/ pool                                   → ReservedRow as billed so far (reserved
//                                                pools: the month's row and its adjustments)
//   d/ pool scope cause                        → i128 outage GPU-ms
//   td/ pool scope cause, bd/ pool scope cause → "", i128 as billed
// where line = institution allocation u32 model i64 rate i64 copay_bp u32 type u32 kind and
// pool = period csp u32 program u32 model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gpuledger::settlement::keys {

inline constexpr char kFormatKey[] = "s/format";
// 1 (no marker): keys joined with 0x1f, counters as decimal text. 2: typed keys, 128-bit
// counters, s/applied with the hash in hex. 3: s/applied with the raw hash. 4: over-cap rules
// (held, refused and unpriced lines; outages by event id, for withdrawals). 5: the
// allocation index in order of start, with the longest interval; credits capped per allocation
// and instant). 6: own use valued slice by slice, wv/ and wu/. 7: this file (own-use intervals
// kept as valued, ow/, so that a re-rating prices them again; reservations as billed, br/).
inline constexpr char kFormatValue[] = "gpuledger-settlement/8";
inline constexpr char kOptionsKey[] = "s/options";
inline constexpr char kAppliedKey[] = "s/applied";

inline constexpr char kRegistry[] = "r/";
inline constexpr char kClose[] = "c/";
inline constexpr char kFrozen[] = "f/";
// The last invoice number issued, per (issuer party, year of issue): n/<issuer>/<year> → u64.
inline constexpr char kInvoiceNumber[] = "n/";
inline constexpr char kLine[] = "l/";
inline constexpr char kTouchedLine[] = "t/";
inline constexpr char kBilledLine[] = "b/";
inline constexpr char kRollupDay[] = "rd/";
inline constexpr char kOutageByKind[] = "dk/";
inline constexpr char kUnpriced[] = "u/";
inline constexpr char kInterval[] = "i/";
inline constexpr char kCapUsed[] = "k/";
inline constexpr char kAllocationIndex[] = "x/";
inline constexpr char kLongestIndexed[] = "xl/";
inline constexpr char kOutageRecord[] = "o/";
inline constexpr char kOutageById[] = "oe/";  // source, event id -> StoredOutageEvent
inline constexpr char kOwnUse[] = "w/";
// Own use's value, slice by slice at the rate in force when recorded: Σ GPU-ms × won per
// GPU-hour (i128, not yet divided by 3,600,000); and the own-use GPU-ms with no rate then.
inline constexpr char kOwnUseValue[] = "wv/";
inline constexpr char kOwnUseUnpriced[] = "wu/";
inline constexpr char kOwnUseRecord[] = "ow/";
inline constexpr char kTouchedOwnUse[] = "tw/";
inline constexpr char kBilledOwnUse[] = "bw/";
inline constexpr char kBilledReserved[] = "br/";
inline constexpr char kOutage[] = "d/";
inline constexpr char kTouchedOutage[] = "td/";
inline constexpr char kBilledOutage[] = "bd/";

// Appends typed fields to a key.
class KeyBuilder {
 public:
  explicit KeyBuilder(std::string_view prefix = {}) : out_(prefix) {}
  KeyBuilder& Str(std::string_view s) {
    for (char c : s) {
      out_.push_back(c);
      if (c == '\0') out_.push_back('\xff');
    }
    out_.push_back('\0');
    out_.push_back('\x01');
    return *this;
  }
  KeyBuilder& U32(uint32_t v) { return Be(v, 4); }
  KeyBuilder& U64(uint64_t v) { return Be(v, 8); }
  KeyBuilder& I64(int64_t v) { return Be(static_cast<uint64_t>(v) ^ (uint64_t{1} << 63), 8); }
  // Already encoded fields (e.g. a line).
  KeyBuilder& Raw(std::string_view encoded) {
    out_.append(encoded);
    return *this;
  }
  const std::string& key() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  KeyBuilder& Be(uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string out_;
};

// Reads typed fields back. Every read fails (returns false) on bytes that no KeyBuilder wrote;
// it never reads past the end.
class KeyReader {
 public:
  explicit KeyReader(std::string_view in) : in_(in) {}
  // Skips `prefix`; false if the key does not start with it.
  bool Prefix(std::string_view prefix) {
    if (in_.substr(0, prefix.size()) != prefix) return false;
    in_.remove_prefix(prefix.size());
    return true;
  }
  bool Str(std::string* out) {
    out->clear();
    for (size_t i = 0; i < in_.size(); ++i) {
      if (in_[i] != '\0') {
        out->push_back(in_[i]);
        continue;
      }
      if (i + 1 >= in_.size()) return false;
      if (in_[i + 1] == '\x01') {
        in_.remove_prefix(i + 2);
        return true;
      }
      if (in_[i + 1] != '\xff') return false;
      out->push_back('\0');
      ++i;
    }
    return false;
  }
  bool U32(uint32_t* out) {
    uint64_t v = 0;
    if (!Be(4, &v)) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }
  bool U64(uint64_t* out) { return Be(8, out); }
  bool I64(int64_t* out) {
    uint64_t v = 0;
    if (!Be(8, &v)) return false;
    *out = static_cast<int64_t>(v ^ (uint64_t{1} << 63));
    return true;
  }
  // The bytes not read yet.
  std::string_view rest() const { return in_; }
  bool Done() const { return in_.empty(); }

 private:
  bool Be(size_t bytes, uint64_t* out) {
    if (in_.size() < bytes) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(in_[i]);
    in_.remove_prefix(bytes);
    *out = v;
    return true;
  }
  std::string_view in_;
};

// ---- Lines and pools: the fields after the period in l/, t/, b/ keys (a line) and in
// w/, tw/, bw/, d/, td/, bd/ keys (a pool, and for outages its scope and cause) ----

// A line's identity within a period, encoded so that byte order is the order of lines
// on an invoice: institution, allocation, model, rate, co-pay rate, institution type, kind.
struct LineId {
  std::string institution_id;
  std::string allocation_id;
  int model = 0;
  int64_t rate = 0;
  int64_t copay_bp = 0;
  int type = 0;
  int kind = 0;
};

inline std::string EncodeLine(const LineId& l) {
  return KeyBuilder()
      .Str(l.institution_id)
      .Str(l.allocation_id)
      .U32(static_cast<uint32_t>(l.model))
      .I64(l.rate)
      .I64(l.copay_bp)
      .U32(static_cast<uint32_t>(l.type))
      .U32(static_cast<uint32_t>(l.kind))
      .Take();
}

inline bool DecodeLine(KeyReader* r, LineId* out) {
  uint32_t model = 0, type = 0, kind = 0;
  if (!r->Str(&out->institution_id) || !r->Str(&out->allocation_id) || !r->U32(&model) ||
      !r->I64(&out->rate) || !r->I64(&out->copay_bp) || !r->U32(&type) || !r->U32(&kind)) {
    return false;
  }
  out->model = static_cast<int>(model);
  out->type = static_cast<int>(type);
  out->kind = static_cast<int>(kind);
  return true;
}

inline bool DecodeLine(std::string_view encoded, LineId* out) {
  KeyReader r(encoded);
  return DecodeLine(&r, out) && r.Done();
}

// `prefix` period line.
inline std::string LineKey(std::string_view prefix, std::string_view period,
                           std::string_view line) {
  return KeyBuilder(prefix).Str(period).Raw(line).Take();
}

// A pool of a period (own use, outages): period csp program model.
inline std::string PoolRest(std::string_view period, std::string_view csp, int program, int model) {
  return KeyBuilder()
      .Str(period)
      .Str(csp)
      .U32(static_cast<uint32_t>(program))
      .U32(static_cast<uint32_t>(model))
      .Take();
}

inline std::string OutageRest(std::string_view period, std::string_view csp, int program, int model,
                              std::string_view scope, std::string_view cause) {
  return KeyBuilder().Raw(PoolRest(period, csp, program, model)).Str(scope).Str(cause).Take();
}

struct PoolFields {
  std::string period;
  std::string csp;
  int program = 0;
  int model = 0;
  std::string scope;  // outages only
  std::string cause;  // outages only
};

inline bool DecodePool(std::string_view rest, bool outage, PoolFields* out) {
  KeyReader r(rest);
  uint32_t prog = 0, model = 0;
  if (!r.Str(&out->period) || !r.Str(&out->csp) || !r.U32(&prog) || !r.U32(&model)) return false;
  out->program = static_cast<int>(prog);
  out->model = static_cast<int>(model);
  if (outage && (!r.Str(&out->scope) || !r.Str(&out->cause))) return false;
  return r.Done();
}

// ---- The reports' daily roll-up ----

enum RollupMeasure : uint32_t {
  kMeasureUsed = 1,             // usage of an allocation, every line kind (as reported)
  kMeasureOwnUse = 2,           // a CSP's own use of a pool
  kMeasurePlannedOutage = 3,    // outages declared OUTAGE_PLANNED
  kMeasureUnplannedOutage = 4,  // every other outage
};

inline constexpr int64_t kMsPerDay = 86'400'000;
inline constexpr int64_t kKstOffsetMs = 9 * 3'600'000;

// The KST day of an instant, as days since 1970-01-01 KST (floor).
inline int64_t KstDay(int64_t utc_ms) {
  const int64_t t = utc_ms + kKstOffsetMs;
  return t >= 0 ? t / kMsPerDay : -((-t + kMsPerDay - 1) / kMsPerDay);
}
inline int64_t KstDayStartMs(int64_t day) { return day * kMsPerDay - kKstOffsetMs; }

// The fields of an rd/ key after its day.
inline std::string RollupRest(std::string_view csp, int program, int model,
                              std::string_view allocation, int type, RollupMeasure measure) {
  return KeyBuilder()
      .Str(csp)
      .U32(static_cast<uint32_t>(program))
      .U32(static_cast<uint32_t>(model))
      .Str(allocation)
      .U32(static_cast<uint32_t>(type))
      .U32(measure)
      .Take();
}

struct RollupFields {
  uint32_t day = 0;
  std::string csp;
  int program = 0;
  int model = 0;
  std::string allocation;
  int type = 0;
  uint32_t measure = 0;
};

// An rd/ key (with its prefix).
inline bool DecodeRollup(std::string_view key, RollupFields* out) {
  KeyReader r(key);
  uint32_t program = 0, model = 0, type = 0;
  if (!r.Prefix(kRollupDay) || !r.U32(&out->day) || !r.Str(&out->csp) || !r.U32(&program) ||
      !r.U32(&model) || !r.Str(&out->allocation) || !r.U32(&type) || !r.U32(&out->measure)) {
    return false;
  }
  out->program = static_cast<int>(program);
  out->model = static_cast<int>(model);
  out->type = static_cast<int>(type);
  return r.Done();
}

// ---- Values ----

inline std::string EncodeI128(__int128 v) {
  std::string out(16, '\0');
  auto u = static_cast<unsigned __int128>(v);
  for (int i = 15; i >= 0; --i) {
    out[i] = static_cast<char>(static_cast<uint8_t>(u & 0xff));
    u >>= 8;
  }
  return out;
}

// Nothing unless `in` is exactly 16 bytes.
inline std::optional<__int128> DecodeI128(std::string_view in) {
  if (in.size() != 16) return std::nullopt;
  unsigned __int128 u = 0;
  for (char c : in) u = (u << 8) | static_cast<uint8_t>(c);
  return static_cast<__int128>(u);
}

inline std::string EncodeU64(uint64_t v) { return KeyBuilder().U64(v).Take(); }

inline std::optional<uint64_t> DecodeU64(std::string_view in) {
  KeyReader r(in);
  uint64_t v = 0;
  if (!r.U64(&v) || !r.Done()) return std::nullopt;
  return v;
}

}  // namespace gpuledger::settlement::keys
