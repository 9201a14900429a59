// SHA-256 digests for the ledger's hash chain and the dedup index.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpuledger::ledger {

using Digest = std::array<uint8_t, 32>;

inline constexpr Digest kZeroDigest{};

// SHA-256 of `data`.
Digest Sha256(std::string_view data);

// The chain link: SHA-256(prev || seq as 8 bytes big-endian || entry_bytes).
Digest ChainHash(const Digest& prev, uint64_t seq, std::string_view entry_bytes);

// Lower-case hex, 64 characters.
std::string ToHex(const Digest& digest);

// The digest's 32 raw bytes as a string.
std::string ToBytes(const Digest& digest);

// Inverse of ToBytes; false if `bytes` is not exactly 32 bytes long.
bool FromBytes(std::string_view bytes, Digest* out);

}  // namespace gpuledger::ledger
