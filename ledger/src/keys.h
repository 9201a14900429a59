// On-disk key and value encodings. See docs/LEDGER.md; change them only with a format bump.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace gpuledger::ledger::keys {

inline constexpr char kFormatKey[] = "meta/format";
inline constexpr char kHeadKey[] = "meta/head";
inline constexpr char kFormatValue[] = "gpuledger-ledger/2";
// Read as well; a writer upgrades the marker (format 2 adds key rotation records and
// meta/first_public_key, which format-1 builds would misread).
inline constexpr char kFormatValueV1[] = "gpuledger-ledger/1";
inline constexpr char kCountersKey[] = "meta/counters";
inline constexpr char kIntervalKey[] = "meta/checkpoint_interval";
inline constexpr char kPublicKeyKey[] = "meta/public_key";
inline constexpr char kFirstPublicKeyKey[] = "meta/first_public_key";
// ReplicationState: where the ledger stands in its ledger topic (docs/RELIABILITY.md).
inline constexpr char kReplicationKey[] = "meta/replication";

inline constexpr char kEntriesCf[] = "entries";
inline constexpr char kDedupCf[] = "dedup";
inline constexpr char kOffsetsCf[] = "offsets";
inline constexpr char kCheckpointsCf[] = "checkpoints";
inline constexpr char kProducersCf[] = "producers";

inline void PutBe64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline uint64_t GetBe64(std::string_view in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

inline std::string SeqKey(uint64_t seq) {
  std::string k;
  PutBe64(&k, seq);
  return k;
}

// A key rotation record in the checkpoints column family: after the checkpoint at `seq` (if
// any) and earlier rotations at `seq`.
inline constexpr char kRotationTag = '\x01';
inline std::string RotationKey(uint64_t seq, uint64_t n) {
  std::string k = SeqKey(seq);
  k.push_back(kRotationTag);
  PutBe64(&k, n);
  return k;
}

inline std::string DedupKey(std::string_view source_id, std::string_view event_id) {
  std::string k(source_id);
  k.push_back('\0');
  k.append(event_id);
  return k;
}

inline std::string OffsetKey(std::string_view topic, int32_t partition) {
  std::string k(topic);
  k.push_back('\0');
  PutBe64(&k, static_cast<uint32_t>(partition));
  return k;
}

}  // namespace gpuledger::ledger::keys
